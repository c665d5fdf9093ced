//! The MASV-compatible service.
