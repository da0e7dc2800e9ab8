//! Generated protobuf types and gRPC service stubs.

/// etcd's `mvccpb` package: key-value records and watch events.
pub mod mvccpb {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("mvccpb");
}

/// etcd's `authpb` package: users, roles and permissions.
pub mod authpb {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("authpb");
}

/// etcd's `etcdserverpb` package: the v3 client API.
pub mod etcdserverpb {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("etcdserverpb");
}

/// Ordo's own protobuf packages.
pub mod ordo {
    /// Ordo's internal encodings: log entry envelope and snapshot body (package `ordo.kv`).
    pub mod kv {
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        tonic::include_proto!("ordo.kv");
    }
}

pub use ordo::kv as internal;
