//! Exponential moving average of a model's weights: ema ← d·ema + (1 − d)·θ after each step.
use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

use crate::model::VelocityNet;

/// Collects every float parameter, detached and flattened, in visiting order.
struct Collect(Vec<Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val().inner();
        let numel = value.shape().num_elements();
        self.0.push(value.reshape([numel]));
    }
}

/// Blends each float parameter with the collected one at the same position.
struct Blend {
    sources: std::vec::IntoIter<Tensor<1>>,
    decay: f64,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let source = self
            .sources
            .next()
            .expect("the EMA and the model have the same parameters");
        let decay = self.decay;
        param.map(|ema| {
            let shape = ema.shape();
            ema * decay + source.reshape(shape) * (1.0 - decay)
        })
    }
}

/// `ema ← decay·ema + (1 − decay)·model`; `ema` lives on the model's inner (non-autodiff) device.
pub fn update(ema: VelocityNet, model: &VelocityNet, decay: f64) -> VelocityNet {
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    ema.map(&mut Blend {
        sources: collect.0.into_iter(),
        decay,
    })
}
