//! An exported model run by tract: the exporter checks every file it writes this way, and
//! mf-edge's tract backend serves with it.
use std::io::Cursor;
use std::sync::Arc;
use std::vec;
use std::vec::Vec;

use anyhow::Context;
use tract_onnx::prelude::*;

use crate::batch::Batch;

/// A model read and optimized by tract for one batch size and sample shape.
pub struct TractPlan {
    plan: Arc<TypedRunnableModel>,
    batch: usize,
}

impl TractPlan {
    /// Reads the ONNX `model` and optimizes it for `batch` samples of `sample_shape`.
    pub fn new(model: &[u8], batch: usize, sample_shape: &[usize]) -> anyhow::Result<TractPlan> {
        let z_shape: Vec<usize> = core::iter::once(batch)
            .chain(sample_shape.iter().copied())
            .collect();
        let plan = tract_onnx::onnx()
            .model_for_read(&mut Cursor::new(model))
            .context("tract cannot read the model")?
            .with_input_fact(0, f32::fact(&z_shape).into())?
            .with_input_fact(1, f32::fact([batch]).into())?
            .with_input_fact(2, f32::fact([batch]).into())?
            .with_input_fact(3, i64::fact([batch]).into())?
            .into_optimized()
            .context("tract cannot optimize the model")?
            .into_runnable()?;
        Ok(TractPlan { plan, batch })
    }

    /// Runs the model on `inputs` (of the plan's batch size) and returns u, flattened.
    pub fn run(&self, inputs: &Batch) -> anyhow::Result<Vec<f32>> {
        anyhow::ensure!(
            inputs.len() == self.batch,
            "a plan for batches of {} got {}",
            self.batch,
            inputs.len()
        );
        let z = tract_ndarray::ArrayD::from_shape_vec(inputs.z_shape(), inputs.z.clone())?;
        let t = tract_ndarray::Array1::from_vec(inputs.t.clone());
        let r = tract_ndarray::Array1::from_vec(inputs.r.clone());
        let class = tract_ndarray::Array1::from_vec(inputs.class.clone());
        let out = self.plan.run(tvec!(
            z.into_tensor().into(),
            t.into_tensor().into(),
            r.into_tensor().into(),
            class.into_tensor().into()
        ))?;
        Ok(out[0]
            .to_plain_array_view::<f32>()?
            .iter()
            .copied()
            .collect())
    }
}
