//! The kernel seam of weft.
