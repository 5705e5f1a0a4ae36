//! The three renditions and how their names, sizes and wire values relate.

use svs_common::proto::stream::Resolution;

/// A concrete rendition (AUTO is a playback mode, not a rendition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rendition {
    /// 240 lines high (the width keeps the source's aspect).
    P240,
    /// 720 lines high.
    P720,
    /// 1440 lines high.
    P1440,
}

impl Rendition {
    /// Every rendition, lowest first.
    pub const ALL: [Rendition; 3] = [Rendition::P240, Rendition::P720, Rendition::P1440];

    /// File-name suffix: `240p`, `720p`, `1440p`.
    pub fn label(self) -> &'static str {
        match self {
            Rendition::P240 => "240p",
            Rendition::P720 => "720p",
            Rendition::P1440 => "1440p",
        }
    }

    /// The rendition labelled `label` ("720p").
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.label() == label)
    }

    /// Frame height in pixels.
    pub fn height(self) -> i32 {
        match self {
            Rendition::P240 => 240,
            Rendition::P720 => 720,
            Rendition::P1440 => 1440,
        }
    }

    /// The protocol's name for it.
    pub fn wire(self) -> Resolution {
        match self {
            Rendition::P240 => Resolution::Resolution240p,
            Rendition::P720 => Resolution::Resolution720p,
            Rendition::P1440 => Resolution::Resolution1440p,
        }
    }

    /// `None` for AUTO and UNSPECIFIED.
    pub fn from_wire(resolution: Resolution) -> Option<Self> {
        match resolution {
            Resolution::Resolution240p => Some(Rendition::P240),
            Resolution::Resolution720p => Some(Rendition::P720),
            Resolution::Resolution1440p => Some(Rendition::P1440),
            Resolution::Unspecified | Resolution::Auto => None,
        }
    }

    /// The next rendition down, if any.
    pub fn lower(self) -> Option<Self> {
        match self {
            Rendition::P240 => None,
            Rendition::P720 => Some(Rendition::P240),
            Rendition::P1440 => Some(Rendition::P720),
        }
    }

    /// The next rendition up, if any.
    pub fn higher(self) -> Option<Self> {
        match self {
            Rendition::P240 => Some(Rendition::P720),
            Rendition::P720 => Some(Rendition::P1440),
            Rendition::P1440 => None,
        }
    }
}
