//! Every built-in profile renders a script bash accepts, and each machine's script carries the
//! facts ../shared/factories.md gives for it, written out here independently of the profiles.

use fucina_launch::{builtin_names, render, JobRequest, Profile, Scheduler, Tier};
use std::path::PathBuf;
use std::process::Command;

fn request(nodes: u32, tier: Tier) -> JobRequest {
    JobRequest {
        nodes,
        tier,
        time: None,
        account: Some("proj_123".into()),
        partition: None,
        qos: None,
        job_name: "fucina-test".into(),
        workdir: PathBuf::from("/work dir/runs"),
        binary: PathBuf::from("/opt/fucina/bin/fucina"),
        run_config: PathBuf::from("/work dir/runs/run.toml"),
        log_dir: PathBuf::from("/work dir/runs/out"),
        script_path: PathBuf::from("/work dir/runs/out/job.sh"),
        train_args: vec!["--set".into(), "train.lr=1e-4".into()],
        warning_seconds: 300,
        resubmit: true,
    }
}

fn script(name: &str, nodes: u32, tier: Tier) -> String {
    let profile = Profile::load(name).unwrap();
    render(&profile, &request(nodes, tier)).unwrap_or_else(|e| panic!("{name}: {e:#}"))
}

fn bash_accepts(text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.sh");
    std::fs::write(&path, text).unwrap();
    let out = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "bash -n rejects:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn has_all(name: &str, text: &str, facts: &[&str]) {
    for fact in facts {
        assert!(text.contains(fact), "{name}: missing {fact:?} in\n{text}");
    }
}

#[test]
fn every_profile_renders_a_script_bash_accepts() {
    assert_eq!(builtin_names().len(), 11);
    for name in builtin_names() {
        let profile = Profile::load(name).unwrap();
        let mut req = request(1, Tier::Production);
        if name == "daedalus" {
            req.partition = Some("gpu".into());
        }
        let text = render(&profile, &req).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        bash_accepts(&text);
        has_all(
            name,
            &text,
            &[
                "#!/bin/bash",
                "cd '/work dir/runs'",
                "/opt/fucina/bin/fucina train '/work dir/runs/run.toml' --resume if-present",
                "--set train.lr=1e-4",
                &format!("--set backend={}", profile.backend),
            ],
        );
        if profile.scheduler != Scheduler::None {
            has_all(name, &text, &["if [ \"$status\" -eq 75 ]", "out/job.sh"]);
        }
    }
}

#[test]
fn lumi_g() {
    let text = script("lumi-g", 2, Tier::Production);
    has_all(
        "lumi-g",
        &text,
        &[
            "#SBATCH --account=proj_123",
            "#SBATCH --partition=standard-g",
            "#SBATCH --nodes=2",
            "#SBATCH --ntasks-per-node=8",
            "#SBATCH --gpus-per-node=8",
            "#SBATCH --cpus-per-task=7",
            "#SBATCH --signal=USR1@300",
            "srun --kill-on-bad-exit=1 --cpu-bind=map_cpu:49,57,17,25,1,9,33,41",
            "export ROCR_VISIBLE_DEVICES=$SLURM_LOCALID; exec",
            "--set dist.transport=mpi-host",
            "craype-accel-amd-gfx90a",
            "--set backend=rocm",
            "--set precision=bf16",
            "sbatch '/work dir/runs/out/job.sh'",
        ],
    );
    let debug = script("lumi-g", 1, Tier::Debug);
    has_all(
        "lumi-g debug",
        &debug,
        &["--partition=dev-g", "--time=03:00:00"],
    );
}

#[test]
fn hunter_is_pbs_with_mpiexec() {
    let text = script("hunter", 2, Tier::Production);
    has_all(
        "hunter",
        &text,
        &[
            "#PBS -l select=2:node_type=mi300a:mpiprocs=4",
            "#PBS -l walltime=24:00:00",
            "mpiexec -n 8 --ppn 4 --cpu-bind list:0-23:24-47:48-71:72-95 --gpu-bind list:0:1:2:3",
            "module load PrgEnv-cray cray-mpich rocm craype-accel-amd-gfx942 cray-pals",
            "--set dist.transport=mpi-host",
            // USR1 five minutes before the 24 h wall time.
            "timeout --preserve-status --signal=USR1 86100 mpiexec",
            "qsub '/work dir/runs/out/job.sh'",
        ],
    );
    assert!(!text.contains("#SBATCH"));
    // Host buffers: Cray MPICH must not be told to expect device pointers.
    assert!(!text.contains("MPICH_GPU_SUPPORT_ENABLED"), "{text}");
}

#[test]
fn leonardo_booster() {
    let text = script("leonardo-booster", 4, Tier::Production);
    has_all(
        "leonardo",
        &text,
        &[
            "--partition=boost_usr_prod",
            "--qos=normal",
            "--ntasks-per-node=4",
            "--gres=gpu:4",
            "--cpus-per-task=8",
            "export SRUN_CPUS_PER_TASK=\"$SLURM_CPUS_PER_TASK\"",
            "--time=1-00:00:00",
        ],
    );
    let debug = script("leonardo-booster", 2, Tier::Debug);
    has_all(
        "leonardo debug",
        &debug,
        &["--qos=boost_qos_dbg", "--time=00:30:00"],
    );
    let profile = Profile::load("leonardo-booster").unwrap();
    let err = render(&profile, &request(3, Tier::Debug)).unwrap_err();
    assert!(err.to_string().contains("limit of 2"), "{err}");
    let mut long = request(1, Tier::Debug);
    long.time = Some("02:00:00".into());
    let err = render(&profile, &long).unwrap_err();
    assert!(
        err.to_string()
            .contains("exceeds the debug limit of 00:30:00"),
        "{err}"
    );
}

#[test]
fn marenostrum_5_acc() {
    let text = script("mn5-acc", 1, Tier::Production);
    let facts = [
        "--gres=gpu:4",
        "--cpus-per-task=20",
        "--qos=acc_ehpc",
        "--ntasks-per-node=4",
    ];
    has_all("mn5", &text, &facts);
    assert!(
        !text.contains("--partition"),
        "on MN5 the QoS selects the partition"
    );
    has_all(
        "mn5 debug",
        &script("mn5-acc", 1, Tier::Debug),
        &["--qos=acc_debug"],
    );
}

#[test]
fn meluxina() {
    let text = script("meluxina", 1, Tier::Production);
    has_all(
        "meluxina",
        &text,
        &[
            "--partition=gpu",
            "--qos=default",
            "--gpu-bind=map_gpu:0,1,2,3",
            "--cpu-bind=cores",
            "--hint=nomultithread",
            "export PMIX_MCA_psec=\"native\"",
        ],
    );
    has_all(
        "meluxina debug",
        &script("meluxina", 1, Tier::Debug),
        &["--qos=dev"],
    );
}

#[test]
fn berzelius_asks_for_gpus_in_total() {
    let text = script("berzelius", 2, Tier::Production);
    let facts = ["--ntasks-per-node=8", "--gpus=16", "--constraint=thin"];
    has_all("berzelius", &text, &facts);
}

#[test]
fn jupiter_and_daedalus_are_aarch64_cuda() {
    for name in ["jupiter-booster", "daedalus"] {
        let profile = Profile::load(name).unwrap();
        assert_eq!(profile.arch, "aarch64", "{name}");
        assert_eq!(profile.backend, "cuda", "{name}");
        assert_eq!(profile.node.devices, 4, "{name}");
    }
    let jupiter = script("jupiter-booster", 2, Tier::Production);
    has_all(
        "jupiter",
        &jupiter,
        &["--gres=gpu:4", "--partition=booster"],
    );
    // DAEDALUS is not confirmed: its placeholders must be replaced, not submitted.
    let daedalus = Profile::load("daedalus").unwrap();
    let err = render(&daedalus, &request(1, Tier::Production)).unwrap_err();
    assert!(
        err.to_string().contains("placeholder: pass --partition"),
        "{err}"
    );
    assert!(daedalus.unsure("node.devices").is_some());
}

#[test]
fn placeholders_and_bad_profiles_are_refused() {
    let profile = Profile::load("lumi-g").unwrap();
    let mut req = request(1, Tier::Production);
    req.account = None;
    let err = render(&profile, &req).unwrap_err();
    assert!(
        err.to_string().contains("placeholder: pass --account"),
        "{err}"
    );

    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/factories/lumi-g.toml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let cases = [
        ("backend = \"rocm\"", "backend = \"tpu\"", "backend \"tpu\""),
        (
            "precision = \"bf16\"",
            "precision = \"fp8\"",
            "precision \"fp8\"",
        ),
        ("devices = 8", "devices = 0", "node.devices"),
        (
            "max_time = \"03:00:00\"",
            "max_time = \"soon\"",
            "wall time \"soon\"",
        ),
        (
            "launcher = \"srun\"",
            "launcher = \"mpiexec\"",
            "does not go with scheduler",
        ),
        (
            "[partitions.debug]",
            "[partitions.fast]",
            "[partitions.fast]",
        ),
        (
            "cpus_per_rank = 7",
            "cpus_per_rank = 7\ncores = 2",
            "unknown field `cores`",
        ),
        (
            "modules = \"the LUMI",
            "\"node.typo\" = \"the LUMI",
            "not a field",
        ),
    ];
    for (from, to, expected) in cases {
        assert!(text.contains(from), "the profile no longer holds {from:?}");
        let bad = text.replacen(from, to, 1);
        let err = format!("{:#}", Profile::from_toml_str(&bad).unwrap_err());
        assert!(err.contains(expected), "expected {expected:?} in {err}");
    }
}

#[test]
fn local_profiles_run_without_a_scheduler() {
    let text = script("local", 1, Tier::Production);
    assert!(!text.contains("#SBATCH") && !text.contains("srun") && !text.contains("mpirun"));
    assert!(
        !text.contains("-eq 75"),
        "a local run stopped by Ctrl-C must not restart itself"
    );
    let profile = Profile::load("local").unwrap();
    let err = render(&profile, &request(2, Tier::Production)).unwrap_err();
    assert!(err.to_string().contains("--nodes 1"), "{err}");
    let slurm = script("local-slurm", 1, Tier::Production);
    let facts = [
        "--ntasks-per-node=2",
        "--partition=debug",
        "srun --kill-on-bad-exit=1 /opt/fucina/bin/fucina train",
    ];
    has_all("local-slurm", &slurm, &facts);
}
