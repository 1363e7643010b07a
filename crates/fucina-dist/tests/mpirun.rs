//! The collectives under a real `mpirun`, with an even and an odd number of ranks.
#![cfg(feature = "mpi")]

use fucina_dist::mpirun_command;

fn run(np: usize) {
    let out = mpirun_command(np, env!("CARGO_BIN_EXE_fucina-collectives"))
        .output()
        .expect("mpirun is installed (scripts/setup.sh installs Open MPI)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mpirun -np {np} failed:\n{stdout}\n{stderr}"
    );
    for rank in 0..np {
        let line = format!("rank {rank}/{np}: local {rank}/{np}: collectives ok");
        assert!(stdout.contains(&line), "missing {line:?} in:\n{stdout}");
    }
}

#[test]
fn collectives_on_two_ranks() {
    run(2);
}

#[test]
fn collectives_on_three_ranks() {
    run(3);
}
