//! Generates the KMS wire types and gRPC service glue from `proto/`.
//!
//! Message code comes from protobuf-codegen in pure mode (a Rust .proto
//! parser; no `protoc`, no network), so air-gapped builds work from vendored
//! sources. The gRPC glue (method descriptors, a server trait, a blocking
//! client) is emitted here from the same parsed descriptors, so a method path
//! like `/v2.KeyManagementService/Encrypt` always matches the .proto file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const PROTOS: [&str; 2] = ["proto/kms_v2.proto", "proto/kms_v1beta1.proto"];

fn main() {
    if let Err(e) = run() {
        eprintln!("build.rs: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?).join("proto");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-changed=build.rs");

    protobuf_codegen::Codegen::new()
        .pure()
        .include("proto")
        .inputs(PROTOS)
        .out_dir(&out)
        .customize(protobuf_codegen::Customize::default().gen_mod_rs(false))
        .run()
        .map_err(|e| format!("protobuf codegen: {e:#}"))?;

    let parsed = protobuf_parse::Parser::new()
        .pure()
        .include("proto")
        .inputs(PROTOS)
        .parse_and_typecheck()
        .map_err(|e| format!("parse protos: {e:#}"))?;

    for fd in &parsed.file_descriptors {
        let stem = Path::new(fd.name())
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or("proto file without a name")?
            .to_owned();
        // Inner attributes cannot appear in a file pulled in with include!.
        let msg_path = out.join(format!("{stem}.rs"));
        let msgs = std::fs::read_to_string(&msg_path).map_err(|e| e.to_string())?;
        let cleaned: String = msgs
            .lines()
            .filter(|l| !l.starts_with("#![") && !l.starts_with("//!"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&msg_path, cleaned).map_err(|e| e.to_string())?;

        let mut g = String::new();
        for svc in &fd.service {
            gen_service(&mut g, fd.package(), svc)?;
        }
        std::fs::write(out.join(format!("{stem}_grpc.rs")), g).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn rust_type(proto_type: &str, package: &str) -> Result<String, String> {
    let prefix = format!(".{package}.");
    proto_type
        .strip_prefix(&prefix)
        .map(str::to_owned)
        .ok_or_else(|| format!("type {proto_type} is outside package {package}"))
}

fn snake(name: &str) -> String {
    let mut s = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

fn gen_service(
    g: &mut String,
    package: &str,
    svc: &protobuf::descriptor::ServiceDescriptorProto,
) -> Result<(), String> {
    let svc_name = svc.name();
    let mut methods = Vec::new();
    for m in &svc.method {
        if m.client_streaming() || m.server_streaming() {
            return Err(format!("{}: only unary RPCs are supported", m.name()));
        }
        methods.push((
            m.name().to_owned(),
            snake(m.name()),
            rust_type(m.input_type(), package)?,
            rust_type(m.output_type(), package)?,
        ));
    }
    let w = |g: &mut String, s: String| {
        let _ = writeln!(g, "{s}");
    };
    for (name, sn, req, resp) in &methods {
        // A request that does not decode never reaches a handler: gRPC
        // answers INTERNAL by itself. The wrapper counts it as outcome
        // "malformed" and logs it (no content), so it is not silent.
        w(g, format!(
            "fn de_{sn}(r: ::grpcio::MessageReader) -> ::grpcio::Result<{req}> {{\n    ::grpcio::pb_de(r).map_err(|e| {{\n        crate::metrics::metrics().request(\"{package}\", \"{sn}\", \"malformed\", ::std::time::Duration::ZERO);\n        ::log::warn!(\"api={package} op={sn} outcome=malformed error=\\\"the request is not a valid {package}.{svc_name}/{name} message\\\"\");\n        e\n    }})\n}}"
        ));
        w(g, format!(
            "/// `/{package}.{svc_name}/{name}`\npub const METHOD_{up}: ::grpcio::Method<{req}, {resp}> = ::grpcio::Method {{\n    ty: ::grpcio::MethodType::Unary,\n    name: \"/{package}.{svc_name}/{name}\",\n    req_mar: ::grpcio::Marshaller {{ ser: ::grpcio::pb_ser, de: de_{sn} }},\n    resp_mar: ::grpcio::Marshaller {{ ser: ::grpcio::pb_ser, de: ::grpcio::pb_de }},\n}};",
            up = sn.to_ascii_uppercase()
        ));
    }
    w(
        g,
        format!("/// Server side of `{package}.{svc_name}`.\npub trait {svc_name} {{"),
    );
    for (_, sn, req, resp) in &methods {
        w(
            g,
            format!(
                "    fn {sn}(&mut self, ctx: ::grpcio::RpcContext<'_>, req: {req}, sink: ::grpcio::UnarySink<{resp}>);"
            ),
        );
    }
    w(g, "}".into());
    w(g, format!("/// Registers every method of `{package}.{svc_name}` on one grpcio service.\npub fn create_service<S: {svc_name} + Send + Clone + 'static>(s: S) -> ::grpcio::Service {{\n    let b = ::grpcio::ServiceBuilder::new();"));
    for (_, sn, _, _) in &methods {
        w(g, format!("    let mut i = s.clone();\n    let b = b.add_unary_handler(&METHOD_{up}, move |ctx, req, sink| i.{sn}(ctx, req, sink));", up = sn.to_ascii_uppercase()));
    }
    w(g, "    b.build()\n}".into());
    w(g, format!("/// Blocking client for `{package}.{svc_name}`.\n#[derive(Clone)]\npub struct Client {{\n    client: ::grpcio::Client,\n}}\nimpl Client {{\n    pub fn new(channel: ::grpcio::Channel) -> Self {{\n        Client {{ client: ::grpcio::Client::new(channel) }}\n    }}"));
    for (_, sn, req, resp) in &methods {
        w(g, format!("    pub fn {sn}(&self, req: &{req}, opt: ::grpcio::CallOption) -> ::grpcio::Result<{resp}> {{\n        self.client.unary_call(&METHOD_{up}, req, opt)\n    }}", up = sn.to_ascii_uppercase()));
    }
    w(g, "}".into());
    Ok(())
}
