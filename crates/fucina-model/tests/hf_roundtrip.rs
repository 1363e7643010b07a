//! Export then import: f32 is lossless, bf16/f16 round to nearest even, sharding is valid.

mod hf_common;

use fucina_model::hf::{export, ExportOptions, HfCheckpoint, HfDtype};
use half::{bf16, f16};
use hf_common::*;

#[test]
fn f32_export_then_import_is_bit_identical() {
    for tied in [false, true] {
        let config = tiny(tied);
        let model = random_model(&config, 11);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        export(&model, &config, &out, &ExportOptions::default()).unwrap();
        let checkpoint = HfCheckpoint::open(&out).unwrap();
        assert_eq!(checkpoint.config(), &config);
        assert_eq!(checkpoint.torch_dtype(), Some(HfDtype::F32));
        let loaded = checkpoint.load::<B>(&Default::default(), false).unwrap();
        let (a, b) = (weights(&model), weights(&loaded));
        assert_eq!(a.len(), b.len());
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(x), bits(y), "{name} (tied: {tied})");
        }
    }
}

#[test]
fn half_precision_exports_round_to_nearest_even() {
    let config = tiny(false);
    let model = random_model(&config, 12);
    type Rounding = fn(f32) -> f32;
    let rounders: [(HfDtype, Rounding); 2] = [
        (HfDtype::BF16, |v| bf16::from_f32(v).to_f32()),
        (HfDtype::F16, |v| f16::from_f32(v).to_f32()),
    ];
    for (dtype, round) in rounders {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let options = ExportOptions {
            dtype: Some(dtype),
            ..Default::default()
        };
        let summary = export(&model, &config, &out, &options).unwrap();
        assert_eq!(summary.total_bytes as usize, config.num_parameters() * 2);
        let checkpoint = HfCheckpoint::open(&out).unwrap();
        assert_eq!(checkpoint.torch_dtype(), Some(dtype));
        let loaded = checkpoint.load::<B>(&Default::default(), false).unwrap();
        let mut changed = 0;
        for ((name, x), (_, y)) in weights(&model).iter().zip(&weights(&loaded)) {
            for (a, b) in x.iter().zip(y) {
                assert_eq!(
                    round(*a).to_bits(),
                    b.to_bits(),
                    "{name} {dtype}: {a} → {b}"
                );
                changed += (a != b) as usize;
            }
        }
        assert!(changed > 0, "{dtype} must actually round");
    }
}
