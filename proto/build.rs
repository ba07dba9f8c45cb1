//! Compiles `kairos/v1/*.proto` into Rust (prost messages, tonic clients and servers) and a
//! descriptor set for gRPC reflection; it must never write outside `OUT_DIR`.

use std::{env, error::Error, path::PathBuf};

const PROTOS: [&str; 2] = ["kairos/v1/jobs.proto", "kairos/v1/worker.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // Maps as BTreeMap: deterministic order in output, and the type `kairos-domain` uses.
        .btree_map(".")
        // No `XClient::connect(url)` helper: it would clash with `WorkerService.Connect`.
        // Clients build a `tonic::transport::Channel` and call `XClient::new(channel)`.
        .build_transport(false)
        // Registry credentials are secret: their `Debug` is written by hand and redacts them.
        .skip_debug([".kairos.v1.SchedulerMessage.RegistryAuth"])
        .file_descriptor_set_path(out_dir.join("kairos_descriptor.bin"))
        .compile_protos(&PROTOS, &["."])?;
    Ok(())
}
