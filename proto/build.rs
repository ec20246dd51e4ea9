fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc keeps a fresh machine free of hand-installed tools.
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    tonic_build::configure().compile_protos(&["coord.proto", "dfs.proto"], &["."])?;
    println!("cargo:rerun-if-changed=coord.proto");
    println!("cargo:rerun-if-changed=dfs.proto");
    Ok(())
}
