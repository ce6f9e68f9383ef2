//! Rendering tests: every page's pieces render, and hostile text (names,
//! labels, log lines) comes out as text.
