//! Multi-frame Grayscale Word Secondary Capture (1.2.840.10008.5.1.4.1.1.7.3) with the multi-frame functional
//! groups that carry geometry: Pixel Measures and Plane Orientation shared, Plane Position per frame, and the
//! Frame of Reference — the attributes Debian's dciodvfy asked for are all here (ConversionType SYN, SC
//! equipment, Frame Increment Pointer → Slice Location Vector, Presentation LUT Shape, Rescale Type, an empty
//! Patient Orientation).

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;

use super::elements::{put_ds, put_empty, put_is, put_seq, put_str, put_strs, Obj};
use super::scale::frame_pixels;
use super::{common, Ctx};

/// The whole volume as one instance, one frame per slice.
pub fn build(ctx: &Ctx) -> Obj {
    let mut o = common::base(ctx, 0);
    let r = ctx.req;
    put_strs(&mut o, tags::IMAGE_TYPE, VR::CS, &["DERIVED", "SECONDARY"]);
    put_empty(&mut o, tags::PATIENT_ORIENTATION, VR::CS);

    // SC Equipment and SC Image.
    put_str(&mut o, tags::CONVERSION_TYPE, VR::CS, "SYN");
    put_str(&mut o, tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER, VR::LO, "ldae");
    put_str(&mut o, tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER_MODEL_NAME, VR::LO, "ldae gap filling");
    let sw: String = r.code_version.chars().filter(|c| !c.is_control() && *c != '\\').take(64).collect();
    put_strs(&mut o, tags::SECONDARY_CAPTURE_DEVICE_SOFTWARE_VERSIONS, VR::LO, &[sw]);
    put_str(&mut o, tags::DATE_OF_SECONDARY_CAPTURE, VR::DA, &r.created.format("%Y%m%d").to_string());
    put_str(&mut o, tags::TIME_OF_SECONDARY_CAPTURE, VR::TM, &r.created.format("%H%M%S").to_string());

    // Multi-frame.
    let p = &ctx.planes;
    let nk = ctx.volume.shape()[2];
    put_is(&mut o, tags::NUMBER_OF_FRAMES, nk as i64);
    o.put(DataElement::new(
        tags::FRAME_INCREMENT_POINTER,
        VR::AT,
        PrimitiveValue::Tags([tags::SLICE_LOCATION_VECTOR].into_iter().collect()),
    ));
    put_ds(&mut o, tags::SLICE_LOCATION_VECTOR, &p.locations);
    put_str(&mut o, tags::PRESENTATION_LUT_SHAPE, VR::CS, "IDENTITY");
    put_str(&mut o, tags::RESCALE_TYPE, VR::LO, "US");

    // Functional groups: geometry shared where it is shared, the position per frame.
    let mut measures = Obj::new_empty();
    put_ds(&mut measures, tags::PIXEL_SPACING, &p.pixel_spacing);
    put_ds(&mut measures, tags::SLICE_THICKNESS, &[p.slice_step]);
    put_ds(&mut measures, tags::SPACING_BETWEEN_SLICES, &[p.slice_step]);
    let mut orientation = Obj::new_empty();
    put_ds(&mut orientation, tags::IMAGE_ORIENTATION_PATIENT, &p.orientation);
    let mut shared = Obj::new_empty();
    put_seq(&mut shared, tags::PIXEL_MEASURES_SEQUENCE, vec![measures]);
    put_seq(&mut shared, tags::PLANE_ORIENTATION_SEQUENCE, vec![orientation]);
    put_seq(&mut o, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared]);
    let per_frame: Vec<Obj> = p
        .positions
        .iter()
        .map(|ipp| {
            let mut pos = Obj::new_empty();
            put_ds(&mut pos, tags::IMAGE_POSITION_PATIENT, ipp);
            let mut item = Obj::new_empty();
            put_seq(&mut item, tags::PLANE_POSITION_SEQUENCE, vec![pos]);
            item
        })
        .collect();
    put_seq(&mut o, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame);

    let [ni, nj, _] = ctx.volume.shape();
    let mut px = Vec::with_capacity(ni * nj * nk);
    for k in 0..nk {
        frame_pixels(ctx.volume, k, &ctx.scaling, &mut px);
    }
    o.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(px.into())));
    o
}
