//! Paths as their raw bytes (Unix), for `#[serde(with = "path_bytes")]`, so that any name
//! survives the trip to a worker process, UTF-8 or not.
//!
//! This module must never turn a path into a string (that would lose or mangle names).

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serializer};

pub(crate) fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(path.as_os_str().as_bytes())
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let bytes = serde_bytes::ByteBuf::deserialize(d)?;
    Ok(PathBuf::from(OsString::from_vec(bytes.into_vec())))
}
