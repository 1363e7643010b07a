//! Starting `mpirun` on this machine: for the tests, the benchmarks and a laptop.

use std::process::Command;

/// An `mpirun -np N program` command that also works as root and with more ranks than cores
/// (Open MPI refuses both unless told); MPICH's hydra needs neither flag.
pub fn mpirun_command(np: usize, program: &str) -> Command {
    let mut command = Command::new("mpirun");
    let open_mpi = Command::new("mpirun")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("Open MPI"))
        .unwrap_or(false);
    command.arg("-np").arg(np.to_string());
    if open_mpi {
        command.arg("--oversubscribe");
        // Binding each rank to one core would make oversubscribed ranks share it.
        command.args(["--bind-to", "none"]);
        command
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
        // No network here but loopback: keep Open MPI off other interfaces.
        command
            .env("OMPI_MCA_btl_tcp_if_include", "lo")
            .env("OMPI_MCA_oob_tcp_if_include", "lo");
    }
    command.arg(program);
    command
}
