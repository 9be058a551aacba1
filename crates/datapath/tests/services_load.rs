//! The Service programs pass the verifier, and their maps take what
//! weft_lb builds and give it back.

mod common;

use common::*;
use weft_datapath::services::{ServiceProgramOptions, ServicePrograms, ServiceTable};

#[test]
fn service_programs_load() {
    need_root!("service_programs_load");
    let p = ServicePrograms::load(&ServiceProgramOptions::default()).unwrap();
    let m = p.maps();
    assert!(m.read_back().unwrap().services.is_empty());
}
