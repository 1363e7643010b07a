//! Local rank and device selection for the launchers' environment layouts.

use fucina_dist::launcher_world_size;
use fucina_dist::placement::{device_index, local_rank_from_env, local_size_from_env};
use std::collections::HashMap;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

#[test]
fn mpirun_layout() {
    let e = env(&[
        ("OMPI_COMM_WORLD_SIZE", "8"),
        ("OMPI_COMM_WORLD_LOCAL_RANK", "3"),
        ("OMPI_COMM_WORLD_LOCAL_SIZE", "4"),
    ]);
    assert_eq!(launcher_world_size(&e), Some(8));
    assert_eq!(local_rank_from_env(&e), Some(3));
    assert_eq!(local_size_from_env(&e), Some(4));
    assert_eq!(device_index(3, &e), 3);
}

#[test]
fn srun_layout_with_one_gpu_bound_per_task() {
    // srun --gpus-per-task=1 (or a select_gpu wrapper) leaves one visible device per rank.
    let e = env(&[
        ("SLURM_STEP_NUM_TASKS", "16"),
        ("SLURM_LOCALID", "5"),
        ("CUDA_VISIBLE_DEVICES", "5"),
    ]);
    assert_eq!(launcher_world_size(&e), Some(16));
    assert_eq!(local_rank_from_env(&e), Some(5));
    assert_eq!(device_index(5, &e), 0);
}

#[test]
fn srun_layout_on_lumi_with_all_gcds_visible() {
    let e = env(&[
        ("SLURM_STEP_NUM_TASKS", "16"),
        ("SLURM_LOCALID", "6"),
        ("ROCR_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7"),
    ]);
    assert_eq!(device_index(local_rank_from_env(&e).unwrap(), &e), 6);
}

#[test]
fn pals_layout_on_hunter() {
    let e = env(&[
        ("PALS_RANKID", "6"),
        ("PALS_LOCAL_RANKID", "2"),
        ("PALS_LOCAL_SIZE", "4"),
    ]);
    assert_eq!(
        launcher_world_size(&e),
        Some(0),
        "a PALS rank is launched even without a size variable"
    );
    assert_eq!(local_rank_from_env(&e), Some(2));
    assert_eq!(device_index(2, &e), 2);
}

#[test]
fn no_launcher_means_world_size_one() {
    let e = env(&[("SLURM_NTASKS", "8"), ("SLURM_JOB_ID", "1")]);
    // Inside an sbatch script but outside srun: not a rank of anything.
    assert_eq!(launcher_world_size(&e), None);
    assert_eq!(device_index(0, &e), 0);
}

#[test]
fn two_visible_devices_shared_by_four_ranks() {
    let e = env(&[("CUDA_VISIBLE_DEVICES", "2,3")]);
    assert_eq!(
        (0..4).map(|r| device_index(r, &e)).collect::<Vec<_>>(),
        vec![0, 1, 0, 1]
    );
}
