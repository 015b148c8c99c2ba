//! The native backend: [`NativeEngine`] on the kernel family `Isa::select` picks, in its own
//! thread pool when a thread count is given.
use anyhow::Context;
use mf_kernels::Isa;

use super::{Backend, BackendOptions, Inputs};
use crate::model::Model;
use crate::native::NativeEngine;
use crate::tensor::Value;

pub(super) struct Native {
    engine: NativeEngine,
    pool: Option<rayon::ThreadPool>,
}

impl Native {
    pub(super) fn new(model: &Model, opts: &BackendOptions) -> anyhow::Result<Native> {
        let engine = NativeEngine::new(model, Isa::select()?)?;
        let pool = match opts.threads {
            Some(n) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .context("cannot start threads")?,
            ),
            None => None,
        };
        Ok(Native { engine, pool })
    }
}

impl Backend for Native {
    fn describe(&self) -> String {
        let s = self.engine.summary();
        format!(
            "native ({}; {} int8 + {} fp32 GEMMs)",
            self.engine.isa(),
            s.int8_layers,
            s.f32_layers
        )
    }

    fn run(&mut self, inputs: &Inputs) -> anyhow::Result<Vec<f32>> {
        let n = inputs.len();
        let values = vec![
            ("z", Value::F32(inputs.z.clone(), inputs.z_shape())),
            ("t", Value::F32(inputs.t.clone(), vec![n])),
            ("r", Value::F32(inputs.r.clone(), vec![n])),
            ("class", Value::I64(inputs.class.clone(), vec![n])),
        ];
        let out = match &self.pool {
            Some(pool) => pool.install(|| self.engine.run(values))?,
            None => self.engine.run(values)?,
        };
        match out {
            Value::F32(data, _) => Ok(data),
            other => anyhow::bail!(
                "the model's output is {} data, not float",
                other.type_name()
            ),
        }
    }
}
