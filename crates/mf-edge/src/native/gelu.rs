//! Finds the tanh-approximated GELU that mf-export writes node by node after a dense layer, so
//! that the layer's epilogue applies it ([`Activation::GeluTanh`]) instead of nine passes
//! over the layer's output.
use super::Planner;
use crate::tensor::Value;
use mf_kernels::activation::{GELU_CUBIC, GELU_SCALE};

impl Planner<'_> {
    /// The nodes of `x · ((1 + tanh((x·x·x·c + x)·s)) · 0.5)` computed from `x` alone, and the
    /// value it writes; `None` unless the chain is exactly that (the constants equal to
    /// [`GELU_CUBIC`], [`GELU_SCALE`], 1 and 0.5 bit for bit, every intermediate read once), so
    /// the fused activation gives the same bits as the nodes.
    pub(super) fn gelu_tanh(&self, x: &str) -> Option<(Vec<usize>, String)> {
        let users = self.consumers.get(x)?;
        // x feeds the square (twice), the cube, the inner sum and the final product.
        let square = *users.iter().find(|&&u| {
            self.node(u).op_type == "Mul" && self.node(u).input.iter().all(|v| v == x)
        })?;
        let mut taken = vec![square];
        let mut value = self.node(square).output.first()?.clone();
        let mut hidden = vec![x.to_string()];
        let steps: [(&str, Operand); 8] = [
            ("Mul", Operand::Value(x)),
            ("Mul", Operand::Constant(GELU_CUBIC)),
            ("Add", Operand::Value(x)),
            ("Mul", Operand::Constant(GELU_SCALE)),
            ("Tanh", Operand::None),
            ("Add", Operand::Constant(1.0)),
            ("Mul", Operand::Constant(0.5)),
            ("Mul", Operand::Value(x)),
        ];
        for (op, operand) in steps {
            let next = self.sole_consumer(&value, op)?;
            let node = self.node(next);
            let others: Vec<&String> = node.input.iter().filter(|v| **v != value).collect();
            let operand_ok = match operand {
                Operand::None => node.input.len() == 1,
                Operand::Value(name) => node.input.len() == 2 && others == [name],
                Operand::Constant(c) => {
                    node.input.len() == 2
                        && matches!(others.as_slice(), [name] if self.is_scalar(name, c))
                }
            };
            if !operand_ok {
                return None;
            }
            taken.push(next);
            hidden.push(std::mem::replace(&mut value, node.output.first()?.clone()));
        }
        // Every reader of x is in the chain (the square reads it twice), and no value before
        // the last is a graph output.
        let outputs_hidden = !hidden.iter().any(|h| self.is_graph_output(h));
        (users.len() == 5 && users.iter().all(|u| taken.contains(u)) && outputs_hidden)
            .then_some((taken, value))
    }

    /// Whether `name` is a constant holding the single value `c`, bit for bit.
    fn is_scalar(&self, name: &str, c: f32) -> bool {
        matches!(self.constants.get(name), Some(Value::F32(v, _)) if v.len() == 1 && v[0].to_bits() == c.to_bits())
    }
}

/// The second operand of one step of the chain.
enum Operand<'a> {
    /// A unary node.
    None,
    /// The chain's input.
    Value(&'a str),
    /// A constant scalar.
    Constant(f32),
}
