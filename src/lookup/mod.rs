//! Researcher look-ups (next milestone): nearest neighbours, exports, linear probes, previews. Empty until then.
