//! Compiles `kairos/v1/*.proto` into Rust (prost messages, tonic clients and servers) and a
//! descriptor set for gRPC reflection; it must never write outside `OUT_DIR`.
//!
//! The compiler is `$PROTOC` when set, else the `protoc` (with the well-known protos) that the
//! `protoc-bin-vendored` crate ships, so a build needs nothing installed beyond the Rust
//! toolchain.

use std::{env, error::Error, path::PathBuf};

const PROTOS: [&str; 2] = ["kairos/v1/jobs.proto", "kairos/v1/worker.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-env-changed=PROTOC");
    // Any rerun directive replaces cargo's default (rerun on any change in the package), so
    // the protos must be named too, or an edited .proto would keep its stale generated code.
    println!("cargo:rerun-if-changed=kairos");
    println!("cargo:rerun-if-changed=build.rs");
    let mut config = tonic_prost_build::Config::new();
    if env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    let protos: Vec<PathBuf> = PROTOS.iter().map(PathBuf::from).collect();
    let includes = [PathBuf::from("."), protoc_bin_vendored::include_path()?];
    tonic_prost_build::configure()
        // Maps as BTreeMap: deterministic order in output, and the type `kairos-domain` uses.
        .btree_map(".")
        // No `XClient::connect(url)` helper: it would clash with `WorkerService.Connect`.
        // Clients build a `tonic::transport::Channel` and call `XClient::new(channel)`.
        .build_transport(false)
        // Registry credentials are secret: their `Debug` is written by hand and redacts them.
        .skip_debug([".kairos.v1.SchedulerMessage.RegistryAuth"])
        .file_descriptor_set_path(out_dir.join("kairos_descriptor.bin"))
        .compile_with_config(config, &protos, &includes)?;
    Ok(())
}
