//! The firmware: generates one image per class (seed 1000 + class) with the embedded compact
//! model, draws each on the screen, and reports over semihosting the pixels, the screen's
//! checksum and the SysTick time each generation took. Under `qemu-system-arm -icount shift=0`
//! virtual time counts instructions, so a calibration loop of known length turns ticks into
//! instruction counts.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod device {
    use core::sync::atomic::{AtomicU32, Ordering};

    use cortex_m::peripheral::SYST;
    use cortex_m::peripheral::syst::SystClkSource;
    use cortex_m_rt::{entry, exception};
    use cortex_m_semihosting::{debug, hprint, hprintln};
    use mf_core::compact::CompactModel;
    use mf_firmware::app::{self, Buffers, MAX_DIMS};
    use mf_firmware::framebuffer::Screen;
    use mf_firmware::screen;

    /// The compact model, included at build time (see build.rs).
    static MODEL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/model.mfc"));

    static mut BUFFERS: Buffers = Buffers::new();
    static mut SCREEN: Screen = Screen::new();
    static WRAPS: AtomicU32 = AtomicU32::new(0);
    const RELOAD: u32 = 0x00FF_FFFF;

    #[exception]
    fn SysTick() {
        WRAPS.fetch_add(1, Ordering::Relaxed);
    }

    /// SysTick ticks since start (24-bit counter plus counted wraps).
    fn ticks() -> u64 {
        loop {
            let before = WRAPS.load(Ordering::Relaxed);
            let value = SYST::get_current();
            if WRAPS.load(Ordering::Relaxed) == before {
                return before as u64 * (RELOAD as u64 + 1) + (RELOAD - value) as u64;
            }
        }
    }

    /// Ticks taken by `iterations` rounds of a 4-instruction loop (nop, nop, subs, bne).
    fn calibrate(iterations: u32) -> u64 {
        let start = ticks();
        // SAFETY: register-only loop.
        unsafe {
            core::arch::asm!(
                "2:",
                "nop",
                "nop",
                "subs {n}, {n}, #1",
                "bne 2b",
                n = inout(reg) iterations => _,
                options(nomem, nostack),
            );
        }
        ticks() - start
    }

    fn fail(what: &str) -> ! {
        hprintln!("error: {}", what);
        debug::exit(debug::EXIT_FAILURE);
        loop {
            cortex_m::asm::wfi();
        }
    }

    #[entry]
    fn main() -> ! {
        let mut peripherals =
            cortex_m::Peripherals::take().unwrap_or_else(|| fail("peripherals taken"));
        let syst = &mut peripherals.SYST;
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(RELOAD);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();

        let model = match CompactModel::parse(MODEL) {
            Ok(m) => m,
            Err(_) => fail("the embedded model does not parse"),
        };
        if app::check(&model).is_err() {
            fail("the embedded model is larger than the firmware's buffers");
        }
        const CALIBRATION: u32 = 4_000_000;
        let calibration_ticks = calibrate(CALIBRATION);
        hprintln!(
            "model classes={} dims={} layers={} calibration_instructions={} calibration_ticks={}",
            model.classes,
            model.dims(),
            model.layer_count(),
            4 * CALIBRATION,
            calibration_ticks
        );
        // SAFETY: main is the only code touching these statics (the SysTick handler does not).
        let (buffers, screen_buf) = unsafe {
            (
                &mut *core::ptr::addr_of_mut!(BUFFERS),
                &mut *core::ptr::addr_of_mut!(SCREEN),
            )
        };
        let mut pixels = [0u8; MAX_DIMS];
        for class in 0..model.classes.max(1) {
            let seed = 1000 + class as u64;
            let start = ticks();
            let n = match app::generate(&model, class, seed, buffers, &mut pixels) {
                Ok(n) => n,
                Err(_) => fail("generation failed"),
            };
            let spent = ticks() - start;
            let _ = screen::draw(
                screen_buf,
                &pixels[..n],
                model.shape[0],
                model.shape[1],
                class,
                seed,
            );
            hprint!(
                "image class={} seed={} ticks={} screen={:08x} pixels=",
                class,
                seed,
                spent,
                screen_buf.checksum()
            );
            for chunk in pixels[..n].chunks(112) {
                let mut line = [0u8; 224];
                for (i, p) in chunk.iter().enumerate() {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    line[2 * i] = HEX[(p >> 4) as usize];
                    line[2 * i + 1] = HEX[(p & 15) as usize];
                }
                hprint!(
                    "{}",
                    core::str::from_utf8(&line[..2 * chunk.len()]).unwrap_or("")
                );
            }
            hprintln!("");
        }
        debug::exit(debug::EXIT_SUCCESS);
        loop {
            cortex_m::asm::wfi();
        }
    }

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo) -> ! {
        fail("panic")
    }
}

/// On a host the firmware binary has nothing to run: build it for thumbv7em-none-eabihf.
#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "mf-firmware runs on a Cortex-M7: cargo run --release (in firmware/) starts it under qemu"
    );
    std::process::exit(2);
}
