//! Generates the Rust types and tonic services from the .proto files in this crate.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "etcd/kv.proto",
        "etcd/rpc.proto",
        "capstan/store.proto",
        "capstan/peer.proto",
        "capstan/mesh.proto",
        "openapi/openapiv2.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Bytes fields share buffers: one event fans out to many watchers without copies.
        .bytes(".")
        .compile_protos(&protos, &["etcd", "capstan", "openapi"])?;
    Ok(())
}
