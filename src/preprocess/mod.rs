//! Preprocessing: resampling, registration to the template (rigid/affine), transforms (ITK text IO),
//! brain mask, template, and the model's exact input (the reference's deterministic steps).
