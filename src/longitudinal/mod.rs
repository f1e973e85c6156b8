//! Patient timelines and gap filling (next milestone): the timeline of a patient's scans, the gap policy, and
//! filling a gap by interpolating LDAE codes. Empty until that work lands.
