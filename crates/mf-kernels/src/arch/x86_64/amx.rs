//! AMX int8 tiles (Sapphire Rapids and later): `tdpbusd` multiplies a tile of 16 rows × 64
//! u8 activations by a tile of 16 depth steps × 16 columns of four s8 weights, adding 16 × 16
//! i32 sums: 16,384 multiply-adds an instruction, where VNNI's `vpdpbusd` does 64.
//!
//! The packed weights are VNNI's (steps of four depths for each of 16 or 32 columns, see
//! `pack.rs`), so a weight tile is 16 consecutive steps of a panel read with the panel's step
//! pitch, and an activation tile is 16 rows read `lda` bytes apart: nothing is repacked. A
//! depth run whose steps are not a multiple of 16 ends on a narrower tile pair (`tmm5` and
//! `tmm6`/`tmm7`), shaped for the product before its first tile ([`BRACKET`]). Tiles of 16 rows
//! run here; a shorter one (the last of a product) runs VNNI's kernel, whose sums are the same
//! integers. Sums are exact i32, as VNNI's, so the output is the scalar reference's bit for bit.
//!
//! Linux hands out the tile registers' state only on request: [`enable`] asks once per process.
use core::arch::asm;

use super::avx512;
use crate::arch::{AForm, Bracket, Depth, I8Micro};

/// Rows of an activation tile (and of a sum tile).
const ROWS: usize = 16;
/// Depth steps (of four bytes) in a full activation row, the most a tile row holds.
const STEPS: usize = 16;

/// AMX int8 tiles: 16 rows × 32 columns (two sum tiles), depth unit 4, u8 activations.
pub(crate) static I8: I8Micro = I8Micro {
    mr: ROWS,
    nr: 32,
    ku: 4,
    row_align: 1,
    a_form: AForm::U8,
    tile: i8_tile,
    epilogue: &avx512::EPILOGUE,
    bracket: Some(&BRACKET),
};

/// AMX int8 tiles one sum tile wide, 16 × 16, for layers of at most 16 outputs.
pub(crate) static I8_NARROW: I8Micro = I8Micro {
    mr: ROWS,
    nr: 16,
    ku: 4,
    row_align: 1,
    a_form: AForm::U8,
    tile: i8_tile_narrow,
    epilogue: &avx512::EPILOGUE,
    bracket: Some(&BRACKET),
};

/// The tile shapes for a product, set before a thread's tiles and released after.
static BRACKET: Bracket = Bracket {
    begin: configure,
    end: release,
};

/// `ldtilecfg`'s 64-byte operand: palette 1, then each tile register's bytes per row and rows.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

impl TileConfig {
    /// The shapes for depth runs of `steps` steps: `tmm0`, `tmm1` sums (16 × 16 i32); `tmm2`
    /// activations and `tmm3`, `tmm4` weights for 16 steps; `tmm5` activations and `tmm6`,
    /// `tmm7` weights for the run's last `steps % 16` steps (left unconfigured when none).
    fn for_steps(steps: usize) -> Self {
        let mut config = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            bytes_per_row: [0; 16],
            rows: [0; 16],
        };
        for t in 0..5 {
            config.bytes_per_row[t] = 64;
            config.rows[t] = ROWS as u8;
        }
        let rest = steps % STEPS;
        if rest > 0 {
            config.bytes_per_row[5] = (4 * rest) as u16;
            config.rows[5] = ROWS as u8;
            for t in 6..8 {
                config.bytes_per_row[t] = 64;
                config.rows[t] = rest as u8;
            }
        }
        config
    }
}

/// Shapes the tile registers for products of `depth` ([`Bracket::begin`]).
///
/// # Safety
/// The CPU has AMX-TILE and AMX-INT8 and [`enable`] returned true.
unsafe fn configure(depth: Depth) {
    // SAFETY: the caller's contract.
    unsafe { load(&TileConfig::for_steps(depth.steps)) };
}

/// Loads a tile configuration.
///
/// # Safety
/// As for [`configure`].
unsafe fn load(config: &TileConfig) {
    // SAFETY: the operand is a valid palette-1 configuration (every configured tile at most
    // 16 rows of 64 bytes), 64 readable bytes; AMX is usable (the caller's contract).
    unsafe { asm!("ldtilecfg [{0}]", in(reg) config, options(nostack, readonly, preserves_flags)) };
}

/// Releases the tile registers ([`Bracket::end`]): a thread that has done its tiles does not
/// keep 8 KB of tile state for the kernel to save at each switch.
///
/// # Safety
/// As for [`configure`].
unsafe fn release() {
    // SAFETY: AMX is usable (the caller's contract); `tilerelease` touches no memory.
    unsafe { asm!("tilerelease", options(nostack, nomem, preserves_flags)) };
}

/// [`I8`]'s tile: 16 rows on AMX, fewer on VNNI's 32-wide kernel.
///
/// # Safety
/// `I8Micro`'s tile contract, inside [`BRACKET`] for this depth.
unsafe fn i8_tile(rows: usize, depth: Depth, a: *const u8, lda: usize, b: *const i8, c: *mut i32) {
    // SAFETY: the caller's contract; a full tile is AMX's, a short one VNNI's with its panels.
    unsafe {
        match rows {
            ROWS => amx_tile::<2>(depth, a, lda, b, c),
            _ => on_vnni(avx512::i8_tile, (rows, 32), depth, (a, lda), b, c),
        }
    }
}

/// [`I8_NARROW`]'s tile, as [`i8_tile`] for 16-wide panels.
///
/// # Safety
/// As for [`i8_tile`].
unsafe fn i8_tile_narrow(
    rows: usize,
    depth: Depth,
    a: *const u8,
    lda: usize,
    b: *const i8,
    c: *mut i32,
) {
    // SAFETY: as for `i8_tile`.
    unsafe {
        match rows {
            ROWS => amx_tile::<1>(depth, a, lda, b, c),
            _ => on_vnni(avx512::i8_tile_narrow, (rows, 16), depth, (a, lda), b, c),
        }
    }
}

/// A VNNI tile kernel's signature.
type VnniTile = unsafe fn(usize, Depth, *const u8, usize, *const i8, *mut i32);

/// A tile of fewer than 16 rows on VNNI's `tile`, in pieces of at most its 12 rows.
///
/// # Safety
/// `I8Micro`'s tile contract for `rows` rows of `nr` columns; the CPU has AVX-512 VNNI.
unsafe fn on_vnni(
    tile: VnniTile,
    (rows, nr): (usize, usize),
    depth: Depth,
    (a, lda): (*const u8, usize),
    b: *const i8,
    c: *mut i32,
) {
    let mut done = 0;
    while done < rows {
        let part = (rows - done).min(avx512::I8.mr);
        // SAFETY: rows done..done + part are among the caller's rows, and their sums among
        // its tile's (row-major, `nr` apart); the panels are the same for any rows.
        unsafe { tile(part, depth, a.add(done * lda), lda, b, c.add(done * nr)) };
        done += part;
    }
}

/// One 16-row tile of `HALVES` 16-column sum tiles over every run of `depth`.
///
/// # Safety
/// `I8Micro`'s tile contract for 16 rows and panels of `16 · HALVES` columns, inside
/// [`BRACKET`] for this depth (the tile registers shaped by [`configure`]).
#[inline(always)]
unsafe fn amx_tile<const HALVES: usize>(
    depth: Depth,
    a: *const u8,
    lda: usize,
    b: *const i8,
    c: *mut i32,
) {
    // Bytes from one packed step of the panel to the next: four per column.
    let pitch = 64 * HALVES;
    let (full, rest) = (depth.steps / STEPS, depth.steps % STEPS);
    // SAFETY: the sum tiles are configured (the caller's contract); no memory is touched.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            options(nostack, nomem, preserves_flags)
        )
    };
    for run in 0..depth.runs {
        // SAFETY: run `run` of each row starts `run · stride` bytes after it, and its weights
        // follow the earlier runs' steps in the panel (the tile contract).
        let (a_run, b_run) =
            unsafe { (a.add(run * depth.stride), b.add(run * depth.steps * pitch)) };
        for chunk in 0..full {
            // SAFETY: steps chunk·16 .. +16 of the run: 64 bytes of each of the 16 rows and
            // 16 steps of the panel, all inside what the contract makes readable; the tiles
            // were shaped 16 × 64 bytes for them.
            unsafe {
                let (x, w) = (a_run.add(chunk * 64), b_run.add(chunk * STEPS * pitch));
                product::<HALVES, false>(x, lda, w, pitch);
            }
        }
        if rest > 0 {
            // SAFETY: the run's last `rest` steps, as above, in the tiles shaped for them.
            unsafe {
                let (x, w) = (a_run.add(full * 64), b_run.add(full * STEPS * pitch));
                product::<HALVES, true>(x, lda, w, pitch);
            }
        }
    }
    // SAFETY: the tile has room for 16 rows of `16 · HALVES` i32, `4 · 16 · HALVES` bytes
    // apart (the tile contract); each sum tile stores 16 rows of 64 bytes.
    unsafe {
        asm!(
            "tilestored [{c} + {ldc}*1], tmm0",
            c = in(reg) c,
            ldc = in(reg) pitch,
            options(nostack, preserves_flags)
        );
        if HALVES == 2 {
            asm!(
                "tilestored [{c} + {ldc}*1], tmm1",
                c = in(reg) c.add(16),
                ldc = in(reg) pitch,
                options(nostack, preserves_flags)
            );
        }
    }
}

/// Adds the product of 16 rows of activations from `x` (`lda` apart) and the weights from
/// `w` (steps `pitch` apart; the second 16 columns 64 bytes on) into the sum tiles: full
/// 16-step tiles, or with `REST` the remainder tiles.
///
/// # Safety
/// The tiles are shaped by [`configure`] for this depth; the rows and steps they read are
/// readable.
#[inline(always)]
unsafe fn product<const HALVES: usize, const REST: bool>(
    x: *const u8,
    lda: usize,
    w: *const i8,
    pitch: usize,
) {
    // SAFETY: the caller's contract; tdpbusd multiplies u8 (the activations) by s8.
    unsafe {
        match (HALVES, REST) {
            (1, false) => asm!(
                "tileloadd tmm2, [{x} + {lda}*1]",
                "tileloadd tmm3, [{w} + {pitch}*1]",
                "tdpbusd tmm0, tmm2, tmm3",
                x = in(reg) x, lda = in(reg) lda, w = in(reg) w, pitch = in(reg) pitch,
                options(nostack, readonly, preserves_flags)
            ),
            (1, true) => asm!(
                "tileloadd tmm5, [{x} + {lda}*1]",
                "tileloadd tmm6, [{w} + {pitch}*1]",
                "tdpbusd tmm0, tmm5, tmm6",
                x = in(reg) x, lda = in(reg) lda, w = in(reg) w, pitch = in(reg) pitch,
                options(nostack, readonly, preserves_flags)
            ),
            (_, false) => asm!(
                "tileloadd tmm2, [{x} + {lda}*1]",
                "tileloadd tmm3, [{w} + {pitch}*1]",
                "tileloadd tmm4, [{w2} + {pitch}*1]",
                "tdpbusd tmm0, tmm2, tmm3",
                "tdpbusd tmm1, tmm2, tmm4",
                x = in(reg) x, lda = in(reg) lda, w = in(reg) w, w2 = in(reg) w.add(64),
                pitch = in(reg) pitch,
                options(nostack, readonly, preserves_flags)
            ),
            (_, true) => asm!(
                "tileloadd tmm5, [{x} + {lda}*1]",
                "tileloadd tmm6, [{w} + {pitch}*1]",
                "tileloadd tmm7, [{w2} + {pitch}*1]",
                "tdpbusd tmm0, tmm5, tmm6",
                "tdpbusd tmm1, tmm5, tmm7",
                x = in(reg) x, lda = in(reg) lda, w = in(reg) w, w2 = in(reg) w.add(64),
                pitch = in(reg) pitch,
                options(nostack, readonly, preserves_flags)
            ),
        }
    }
}

/// Whether this process may use the AMX tiles: the CPU has AMX-TILE and AMX-INT8 and Linux
/// granted the tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`,
/// asked once per process; the answer is kept).
#[cfg(all(feature = "std", target_os = "linux"))]
pub(crate) fn enable() -> bool {
    static GRANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *GRANTED.get_or_init(|| {
        // CPUID leaf 7 exists on every x86_64 CPU that AVX-512 runs on (the caller checks
        // AVX-512 first).
        let leaf7 = core::arch::x86_64::__cpuid_count(7, 0);
        let (tile, int8) = (leaf7.edx & (1 << 24) != 0, leaf7.edx & (1 << 25) != 0);
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: arch_prctl with these arguments only asks the kernel for a permission; it
        // reads and writes no memory of ours.
        tile && int8
            && unsafe {
                libc::syscall(
                    libc::SYS_arch_prctl,
                    ARCH_REQ_XCOMP_PERM,
                    XFEATURE_XTILEDATA,
                )
            } == 0
    })
}

/// Runs `iters` rounds of 4 independent `tdpbusd` on the tile registers (no memory operands
/// in the loop) and returns the int8 operations done (16,384 multiply-adds per instruction,
/// 2 operations each).
///
/// # Safety
/// The CPU has AMX-TILE and AMX-INT8 and [`enable`] returned true.
pub(crate) unsafe fn peak_i8(iters: u64) -> u64 {
    if iters == 0 {
        return 0;
    }
    // Every tile register 16 rows of 64 bytes.
    let mut config = TileConfig::for_steps(STEPS);
    config.bytes_per_row[..8].fill(64);
    config.rows[..8].fill(ROWS as u8);
    // SAFETY: the caller's contract; the configuration shapes every tile 16 × 64 bytes, the
    // loop reads and writes only tile registers, and the counter ends at 0.
    unsafe {
        load(&config);
        asm!(
            "tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3",
            "tilezero tmm4", "tilezero tmm5", "tilezero tmm6", "tilezero tmm7",
            "2:",
            "tdpbusd tmm0, tmm4, tmm6",
            "tdpbusd tmm1, tmm4, tmm7",
            "tdpbusd tmm2, tmm5, tmm6",
            "tdpbusd tmm3, tmm5, tmm7",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) iters => _,
            options(nostack, nomem)
        );
        release();
    }
    iters * 4 * (ROWS * 16 * 64) as u64 * 2
}
