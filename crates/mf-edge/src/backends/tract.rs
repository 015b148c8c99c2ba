//! The tract backend: the ONNX file optimized by tract for each batch size it meets.
use std::collections::HashMap;

use mf_core::tract::TractPlan;

use super::{Backend, Batch};
use crate::model::Model;

pub(super) struct Tract {
    bytes: Vec<u8>,
    sample_shape: Vec<usize>,
    plans: HashMap<usize, TractPlan>,
}

impl Tract {
    pub(super) fn new(model: &Model) -> anyhow::Result<Tract> {
        let mut t = Tract {
            bytes: model.bytes.clone(),
            sample_shape: model.card.sample_shape.clone(),
            plans: HashMap::new(),
        };
        t.plan(1)?;
        Ok(t)
    }

    /// The plan for batch size `n`, built on first use.
    fn plan(&mut self, n: usize) -> anyhow::Result<&TractPlan> {
        if !self.plans.contains_key(&n) {
            let plan = TractPlan::new(&self.bytes, n, &self.sample_shape)?;
            self.plans.insert(n, plan);
        }
        Ok(&self.plans[&n])
    }
}

impl Backend for Tract {
    fn describe(&self) -> String {
        "tract".into()
    }

    fn run(&mut self, inputs: &Batch) -> anyhow::Result<Vec<f32>> {
        self.plan(inputs.len())?.run(inputs)
    }
}
