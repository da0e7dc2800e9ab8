//! Client libraries other than etcdctl against a live cluster, run from the Python virtual
//! environment `.ci/run` makes (`ORDO_PYTHON`); skipped when it is not there, unless
//! `ORDO_REQUIRE_PYTHON=1`.

mod common;

use common::DevCerts;
use ordo_launch::tools::python_with_or_skip;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_etcd3_speaks_tls_with_a_client_certificate_and_is_refused_without_one() {
    let Some(python) = python_with_or_skip(&["etcd3"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = DevCerts::write(dir.path().join("certs"), &[]);
    let other = DevCerts::write(dir.path().join("other"), &[]);
    let (node_cert, node_key, ca) = (
        certs.file("node-{id}.pem"),
        certs.file("node-{id}-key.pem"),
        certs.file("ca.pem"),
    );
    let mut cluster = common::plan(&[
        "--cert-file",
        &node_cert,
        "--key-file",
        &node_key,
        "--trusted-ca-file",
        &ca,
        "--client-cert-auth",
    ]);
    cluster.start_all().expect("start the servers");
    let leader = cluster
        .wait_leader(&[], common::STEP)
        .await
        .expect("a leader");
    let addr = cluster.spec(leader.id).client_addr;
    let (host, port) = (addr.ip().to_string(), addr.port().to_string());
    let args = [
        host.as_str(),
        &port,
        &ca,
        &certs.file("client-root.pem"),
        &certs.file("client-root-key.pem"),
        &other.file("ca.pem"),
    ];
    if let Err(failed) = common::python_script(&python, "etcd3_tls.py", &args) {
        panic!("python-etcd3 over TLS: {failed}");
    }
    cluster.stop_cleanly(&cluster.ids());
}
