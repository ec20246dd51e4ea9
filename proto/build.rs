fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc keeps a fresh machine free of hand-installed tools.
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    // The error model first, on its own; the APIs then refer to its types
    // where they are (an extern path), so every API names its errors by
    // the one code of error.proto.
    tonic_build::configure().compile_protos(&["error.proto"], &["."])?;
    tonic_build::configure()
        .extern_path(".hstack.error.v1", "crate::error::wire")
        .compile_protos(
            &[
                "coord.proto",
                "dfs.proto",
                "scheduler.proto",
                "mapreduce.proto",
            ],
            &["."],
        )?;
    for p in [
        "error.proto",
        "coord.proto",
        "dfs.proto",
        "scheduler.proto",
        "mapreduce.proto",
    ] {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
