//! The thread team asked for more threads than there are cores: it must stop at the cores
//! (its own test binary, so that the request comes before the team's first use).
use mf_kernels::team;

#[test]
fn the_team_never_exceeds_the_cores() {
    assert!(team::configure(10_000), "the team had started already");
    assert!(
        team::threads() <= team::cores(),
        "{} threads on {} cores",
        team::threads(),
        team::cores()
    );
    // And a job on it still runs every task once.
    let counts: Vec<_> = (0..64)
        .map(|_| std::sync::atomic::AtomicUsize::new(0))
        .collect();
    team::run(64, &|i| {
        counts[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(
        counts
            .iter()
            .all(|c| c.load(std::sync::atomic::Ordering::Relaxed) == 1)
    );
}
