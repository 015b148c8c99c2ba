//! The convolutional classifier on tract, optimized once per batch shape.
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Cursor;

use anyhow::Context;
use tract_onnx::prelude::*;

/// The classifier graph optimized by tract once per batch size it meets.
pub(super) struct Plans {
    bytes: Vec<u8>,
    plans: RefCell<HashMap<Vec<usize>, std::sync::Arc<TypedRunnableModel>>>,
}

impl Plans {
    pub(super) fn new(bytes: Vec<u8>) -> Plans {
        Plans {
            bytes,
            plans: RefCell::new(HashMap::new()),
        }
    }

    /// Scores `[N, features + classes]` of `images` of `shape` `[N, C, H, W]`.
    pub(super) fn run(&self, images: &[f32], shape: &[usize]) -> anyhow::Result<Vec<f32>> {
        let mut plans = self.plans.borrow_mut();
        if !plans.contains_key(shape) {
            let plan = tract_onnx::onnx()
                .model_for_read(&mut Cursor::new(&self.bytes))
                .context("tract cannot read the classifier")?
                .with_input_fact(0, f32::fact(shape).into())?
                .into_optimized()
                .context("tract cannot optimize the classifier")?
                .into_runnable()?;
            plans.insert(shape.to_vec(), plan);
        }
        let input = tract_ndarray::ArrayD::from_shape_vec(shape, images.to_vec())?;
        let out = plans[shape].run(tvec!(input.into_tensor().into()))?;
        Ok(out[0]
            .to_plain_array_view::<f32>()?
            .iter()
            .copied()
            .collect())
    }
}
