//! libtorch computes correctly on the device flagship picks (CUDA when present, else CPU).
//! With `FLAGSHIP_EXPECT_CUDA=1` (set on GPU hosts) a CPU fallback is a failure.

use tch::{Device, Kind, Tensor};

#[test]
fn device_matmul_matches_cpu() {
    let device = flagship_model::device();
    println!(
        "device: {device:?}, cuda devices: {}",
        tch::Cuda::device_count()
    );
    if std::env::var_os("FLAGSHIP_EXPECT_CUDA").is_some() {
        assert!(
            matches!(device, Device::Cuda(_)),
            "expected CUDA, got {device:?}"
        );
    }
    tch::manual_seed(7);
    let a = Tensor::randn([256, 384], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([384, 128], (Kind::Float, Device::Cpu));
    let on_device = a.to(device).matmul(&b.to(device)).to(Device::Cpu);
    let on_cpu = a.matmul(&b);
    let diff = (on_device - &on_cpu).abs().max().double_value(&[]);
    // TF32 on Ampere+ GPUs rounds inputs to 10-bit mantissas: allow that, no more.
    assert!(diff < 5e-2, "max abs diff {diff}");
    assert!(on_cpu.abs().max().double_value(&[]) > 1.0);
}
