//! Check 5, KMS v1: the at-rest, rotation and cold-start checks again with
//! the shipped `deploy/encryption-config-v1.yaml` and `KMSv1=true`.

use crate::at_rest::{at_rest, Kms};

#[test]
fn check5_kms_v1_at_rest() {
    at_rest(Kms::V1);
}

#[test]
fn check5_kms_v1_rotation() {
    crate::rotation::rotation(Kms::V1);
}

#[test]
fn check5_kms_v1_cold_start() {
    crate::cold_start::cold_start(Kms::V1);
}
