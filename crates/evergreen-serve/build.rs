//! Compiles evergreen's own declarations of TensorFlow Serving's gRPC API (`proto/`) with protox
//! (a protobuf compiler in Rust: no `protoc` needed), generates the tonic server and client, and
//! keeps the descriptors for parsing text-format model server configs and batching parameters.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/tensorflow_serving/apis/prediction_service.proto",
        "proto/tensorflow_serving/apis/model_service.proto",
        "proto/tensorflow_serving/apis/prediction_log.proto",
        "proto/tensorflow_serving/config/model_server_config.proto",
        "proto/tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    // The descriptors themselves, to parse `--model_config_file` (text format) at run time.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("descriptors.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
