//! Embeds the libtorch library folders as an rpath, so `sgsc` and the test binaries run without
//! LD_LIBRARY_PATH. LIBTORCH comes from `.cargo/config.toml` (set by `scripts/setup-libtorch.sh`).

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Ok(libtorch) = std::env::var("LIBTORCH") else {
        return;
    };
    let torch = Path::new(&libtorch);
    let mut folders = vec![torch.join("lib")];
    // The CUDA wheels (`nvidia-cuda-runtime`, `nvidia-cuda-cupti`) sit beside `torch/`.
    if let Some(site) = torch.parent() {
        folders.push(site.join("nvidia").join("cu13").join("lib"));
    }
    for folder in folders.iter().filter(|folder| folder.is_dir()) {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", folder.display());
    }
}
