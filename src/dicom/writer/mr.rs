//! MR Image Storage (1.2.840.10008.5.1.4.1.1.4), one file per slice: the shared modules plus Image Plane and
//! the MR Image module, whose acquisition attributes are copied from the emulated source series (PS3.3 lets a
//! Synthetic Data object's acquisition attributes "reflect the technique being simulated"); missing Type 1
//! values fall back to `RM` (research mode) / `NONE`.

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;

use super::elements::{put_ds, put_ds_opt, put_opt, put_str, put_strs, Obj};
use super::scale::frame_pixels;
use super::{common, Ctx};

/// Slice `k` as one MR Image instance.
pub fn build(ctx: &Ctx, k: usize) -> Obj {
    let mut o = common::base(ctx, k);
    put_strs(&mut o, tags::IMAGE_TYPE, VR::CS, &["DERIVED", "SECONDARY", "OTHER"]);

    // Image Plane.
    let p = &ctx.planes;
    put_ds(&mut o, tags::PIXEL_SPACING, &p.pixel_spacing);
    put_ds(&mut o, tags::IMAGE_ORIENTATION_PATIENT, &p.orientation);
    put_ds(&mut o, tags::IMAGE_POSITION_PATIENT, &p.positions[k]);
    put_ds(&mut o, tags::SLICE_THICKNESS, &[p.slice_step]);
    put_ds(&mut o, tags::SPACING_BETWEEN_SLICES, &[p.slice_step]);
    put_ds(&mut o, tags::SLICE_LOCATION, &[p.locations[k]]);

    // MR Image: the emulated technique.
    let mr = &ctx.neighbour.mr;
    let or = |v: &[String], d: &str| if v.is_empty() { vec![d.to_string()] } else { v.to_vec() };
    let scanning = or(&mr.scanning_sequence, "RM");
    put_strs(&mut o, tags::SCANNING_SEQUENCE, VR::CS, &scanning);
    put_strs(&mut o, tags::SEQUENCE_VARIANT, VR::CS, &or(&mr.sequence_variant, "NONE"));
    put_strs(&mut o, tags::SCAN_OPTIONS, VR::CS, &mr.scan_options);
    put_opt(&mut o, tags::MR_ACQUISITION_TYPE, VR::CS, mr.mr_acquisition_type.as_deref());
    put_ds_opt(&mut o, tags::REPETITION_TIME, mr.repetition_time);
    put_ds_opt(&mut o, tags::ECHO_TIME, mr.echo_time);
    match mr.echo_train_length {
        Some(n) => put_str(&mut o, tags::ECHO_TRAIN_LENGTH, VR::IS, &n.to_string()),
        None => put_str(&mut o, tags::ECHO_TRAIN_LENGTH, VR::IS, ""),
    }
    if scanning.iter().any(|s| s == "IR") {
        put_ds_opt(&mut o, tags::INVERSION_TIME, mr.inversion_time);
    }
    if let Some(v) = &mr.sequence_name {
        put_str(&mut o, tags::SEQUENCE_NAME, VR::SH, v);
    }
    if let Some(v) = mr.flip_angle {
        put_ds(&mut o, tags::FLIP_ANGLE, &[v]);
    }
    if let Some(v) = mr.magnetic_field_strength {
        put_ds(&mut o, tags::MAGNETIC_FIELD_STRENGTH, &[v]);
    }
    if let Some(v) = &mr.imaged_nucleus {
        put_str(&mut o, tags::IMAGED_NUCLEUS, VR::SH, v);
    }

    let [ni, nj, _] = ctx.volume.shape();
    let mut px = Vec::with_capacity(ni * nj);
    frame_pixels(ctx.volume, k, &ctx.scaling, &mut px);
    o.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(px.into())));
    o
}
