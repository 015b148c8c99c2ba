//! The native backend: [`NativeEngine`] on the kernel family `Isa::select` picks, on the
//! kernels' thread team (sized by `--threads`, else `MF_THREADS`, else all cores).
use anyhow::ensure;
use mf_kernels::Isa;

use super::{Backend, BackendOptions, Batch};
use crate::model::Model;
use crate::native::NativeEngine;
use crate::tensor::Value;

pub(super) struct Native {
    engine: NativeEngine,
}

impl Native {
    pub(super) fn new(model: &Model, opts: &BackendOptions) -> anyhow::Result<Native> {
        if let Some(n) = opts.threads {
            ensure!(
                mf_kernels::team::configure(n) || mf_kernels::team::threads() == n,
                "the kernel threads already started with {} threads",
                mf_kernels::team::threads()
            );
        }
        Ok(Native {
            engine: NativeEngine::new(model, Isa::select()?)?,
        })
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

    fn run(&mut self, inputs: &Batch) -> anyhow::Result<Vec<f32>> {
        let n = inputs.len();
        let values = vec![
            ("z", Value::F32(inputs.z.clone(), inputs.z_shape().into())),
            ("t", Value::F32(inputs.t.clone(), smallvec::smallvec![n])),
            ("r", Value::F32(inputs.r.clone(), smallvec::smallvec![n])),
            (
                "class",
                Value::I64(inputs.class.clone(), smallvec::smallvec![n]),
            ),
        ];
        match self.engine.run(values)? {
            Value::F32(data, _) => Ok(data),
            other => anyhow::bail!(
                "the model's output is {} data, not float",
                other.type_name()
            ),
        }
    }

    fn time_steps(&mut self) -> bool {
        self.engine.time_steps();
        true
    }

    fn take_step_times(&mut self) -> Option<Vec<crate::native::StepTime>> {
        self.engine.take_step_times()
    }
}
