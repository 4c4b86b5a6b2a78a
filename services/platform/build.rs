//! Nothing to generate. The build script exists so that the vendored protoc
//! crates (build-dependencies) are part of the build graph and therefore
//! downloaded before etcd-client's build script asks `deploy/tools/protoc`
//! for a protoc.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
}
