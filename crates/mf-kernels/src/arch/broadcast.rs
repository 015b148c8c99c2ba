//! The broadcast tile body that most families share: each depth step loads `V` vectors of
//! packed weights, broadcasts each row's activations for that step across a vector and
//! multiply-accumulates them into the row's `V` accumulators. A family supplies only its
//! vector operations ([`BroadcastOps`]); the loop, the interleaved accumulator sets and the
//! stores are written once here. AVX-512 (VNNI int8 and fp32, both widths), AVX2 (int8 through
//! `vpmaddwd`, fp32) and NEON fp32 are instances of it; NEON int8, dotprod and i8mm read their
//! activations another way and keep bodies of their own.
//!
//! The operations are `#[inline(always)]` functions without target features: inlined into the
//! family's `#[target_feature]` entry point, their intrinsics are compiled with its features
//! (the same instructions a hand-written body gives).
use crate::arch::Depth;

/// One family's vectors and operations for [`broadcast_rows`].
///
/// # Safety
/// Each operation may be called only on a CPU with the family's features, with pointers valid
/// for the elements it reads or writes (stated per operation).
pub(crate) unsafe trait BroadcastOps {
    /// Activation elements as the rows hold them (bytes for int8, `f32` for fp32).
    type A;
    /// Packed weight elements.
    type B;
    /// Sum elements (`i32` or `f32`).
    type C;
    /// An accumulator vector of [`Self::LANES`] sums.
    type Acc: Copy;
    /// A vector of weights.
    type W: Copy;
    /// One depth step's activations broadcast across a vector.
    type X: Copy;
    /// Activation elements one depth step takes from a row.
    const A_STEP: usize;
    /// Weight elements one vector holds.
    const B_VECTOR: usize;
    /// Sums one accumulator holds: the columns one weight vector covers.
    const LANES: usize;

    /// A vector of zero sums.
    ///
    /// # Safety
    /// The CPU has the family's features.
    unsafe fn zero() -> Self::Acc;

    /// Loads one weight vector.
    ///
    /// # Safety
    /// `p` is readable for [`Self::B_VECTOR`] elements.
    unsafe fn load(p: *const Self::B) -> Self::W;

    /// Broadcasts one depth step's activations of a row.
    ///
    /// # Safety
    /// `p` is readable for [`Self::A_STEP`] elements (no alignment needed).
    unsafe fn broadcast(p: *const Self::A) -> Self::X;

    /// `acc` plus the step's products of `x` and `w`.
    ///
    /// # Safety
    /// The CPU has the family's features.
    unsafe fn madd(acc: Self::Acc, x: Self::X, w: Self::W) -> Self::Acc;

    /// Lane-wise sum of two accumulators.
    ///
    /// # Safety
    /// The CPU has the family's features.
    unsafe fn add(a: Self::Acc, b: Self::Acc) -> Self::Acc;

    /// Stores an accumulator's sums.
    ///
    /// # Safety
    /// `p` is writable for [`Self::LANES`] elements.
    unsafe fn store(p: *mut Self::C, acc: Self::Acc);

    /// Hints that the cache line holding `p` is read soon, by a later tile: with `STREAM`,
    /// [`broadcast_rows`] fetches the next panel into L2 with it, so that memory stays busy
    /// while a panel already in L2 is read again for the next block of rows. Nothing by
    /// default (the int8 kernels: their weights are a quarter of fp32's bytes per
    /// multiply-add, and hints on every step cost the batch-1 int8 MLP about 18%).
    ///
    /// # Safety
    /// None beyond the CPU having the family's features: `p` need not be valid.
    #[inline(always)]
    unsafe fn prefetch(p: *const u8) {
        let _ = p;
    }
}

/// Bytes of a cache line (x86-64 and the Arm cores we target).
const CACHE_LINE: usize = 64;

/// `R` rows × `V` weight vectors over `depth`, `S` accumulator sets interleaved over the
/// depth steps (so that a short tile is not bound by the accumulate latency), the sets added
/// at the end and stored row-major, `V · LANES` sums a row; with `STREAM`, each step also
/// hints the same step of the next panel (packed right after this one) into L2.
///
/// # Safety
/// The tile contract of [`crate::arch::I8Micro`] (or `F32Micro`) for panels of `V` vectors a
/// step: `a` holds `R` rows `lda` elements apart, each with every run of `depth` readable
/// from its start; `b` holds `depth.total()` steps of `V` vectors; `c` has room for
/// `R · V · LANES` sums; the CPU has `O`'s features.
#[inline(always)]
pub(crate) unsafe fn broadcast_rows<
    O: BroadcastOps,
    const R: usize,
    const S: usize,
    const V: usize,
    const STREAM: bool,
>(
    depth: Depth,
    a: *const O::A,
    lda: usize,
    b: *const O::B,
    c: *mut O::C,
) {
    // SAFETY: the CPU has O's features (the caller's contract), as for every operation below.
    let zero = unsafe { O::zero() };
    let mut acc = [[[zero; V]; R]; S];
    let mut ap;
    let mut bp = b;
    // The next panel's weights start this panel's length on (past the last panel, a pointer
    // that only [`BroadcastOps::prefetch`] sees, which does not read it).
    let next_panel = depth.total() * V * O::B_VECTOR;
    let step_bytes = V * O::B_VECTOR * core::mem::size_of::<O::B>();
    // SAFETY (every loop): the panel holds runs·steps steps of V vectors, each of the R rows
    // (lda elements apart) every run's steps from its start.
    macro_rules! step {
        ($set:expr) => {
            // SAFETY: as stated above `step!`: the loads stay inside the packed panel and the R
            // rows of activations that the tile contract promises.
            unsafe {
                let w: [O::W; V] = core::array::from_fn(|h| O::load(bp.add(h * O::B_VECTOR)));
                if STREAM {
                    let ahead = bp.wrapping_add(next_panel).cast::<u8>();
                    for line in (0..step_bytes).step_by(CACHE_LINE) {
                        O::prefetch(ahead.wrapping_add(line));
                    }
                }
                for i in 0..R {
                    let x = O::broadcast(ap.add(i * lda));
                    for h in 0..V {
                        $set[i][h] = O::madd($set[i][h], x, w[h]);
                    }
                }
                ap = ap.add(O::A_STEP);
                bp = bp.add(V * O::B_VECTOR);
            }
        };
    }
    for run in 0..depth.runs {
        // SAFETY: run `run` starts `run · stride` elements into each row (the tile contract).
        ap = unsafe { a.add(run * depth.stride) };
        // The sets in turn, then the steps left over into the first.
        for _ in 0..depth.steps / S {
            for set in acc.iter_mut() {
                step!(set);
            }
        }
        for _ in 0..depth.steps % S {
            step!(acc[0]);
        }
    }
    for i in 0..R {
        for h in 0..V {
            // SAFETY: c has room for R rows of V·LANES sums; the CPU has O's features.
            unsafe {
                let mut sum = acc[0][i][h];
                for set in &acc[1..] {
                    sum = O::add(sum, set[i][h]);
                }
                O::store(c.add((i * V + h) * O::LANES), sum);
            }
        }
    }
}
