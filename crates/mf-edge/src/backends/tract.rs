//! The tract backend: the ONNX file optimized by tract for each batch size it meets.
use std::collections::HashMap;
use std::io::Cursor;

use anyhow::Context;
use tract_onnx::prelude::*;

use super::{Backend, Inputs};
use crate::model::Model;

type Plan = std::sync::Arc<TypedRunnableModel>;

pub(super) struct Tract {
    bytes: Vec<u8>,
    plans: HashMap<usize, Plan>,
}

impl Tract {
    pub(super) fn new(model: &Model) -> anyhow::Result<Tract> {
        let mut t = Tract {
            bytes: model.bytes.clone(),
            plans: HashMap::new(),
        };
        t.plan(1, &model.card.sample_shape)?;
        Ok(t)
    }

    /// The plan for batch size `n`, built on first use.
    fn plan(&mut self, n: usize, sample_shape: &[usize]) -> anyhow::Result<&Plan> {
        if !self.plans.contains_key(&n) {
            let z_shape: Vec<usize> = std::iter::once(n)
                .chain(sample_shape.iter().copied())
                .collect();
            let plan = tract_onnx::onnx()
                .model_for_read(&mut Cursor::new(&self.bytes))
                .context("tract cannot read the model")?
                .with_input_fact(0, f32::fact(&z_shape).into())?
                .with_input_fact(1, f32::fact([n]).into())?
                .with_input_fact(2, f32::fact([n]).into())?
                .with_input_fact(3, i64::fact([n]).into())?
                .into_optimized()
                .context("tract cannot optimize the model")?
                .into_runnable()?;
            self.plans.insert(n, plan);
        }
        Ok(&self.plans[&n])
    }
}

impl Backend for Tract {
    fn describe(&self) -> String {
        "tract".into()
    }

    fn run(&mut self, inputs: &Inputs) -> anyhow::Result<Vec<f32>> {
        let plan = self.plan(inputs.len(), &inputs.sample_shape)?;
        let z = tract_ndarray::ArrayD::from_shape_vec(inputs.z_shape(), inputs.z.clone())?;
        let t = tract_ndarray::Array1::from_vec(inputs.t.clone());
        let r = tract_ndarray::Array1::from_vec(inputs.r.clone());
        let class = tract_ndarray::Array1::from_vec(inputs.class.clone());
        let out = plan.run(tvec!(
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
