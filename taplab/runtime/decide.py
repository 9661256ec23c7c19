"""The per-frame decision, as pure functions: the frame's facts and the run's state in, a :class:`Decision` out.

TapLab's Algorithm 1, with the latency budget's first rules:

- an I-frame is a key frame (``key-I``); so is a frame that cannot be warped: no usable past
  motion, or nothing to warp from yet (``key``);
- a P-frame ``key_interval`` or more frames after the last key frame is a key frame (``key-interval``):
  the bound on drift for streams whose I-frames are far apart; with B-frames, a P-frame whose next
  anchor would be past the bound already is, so that no B-frame is farther from its key frame; under
  a budget it waits, as RGFS's do, while another key frame's CNN runs;
- a frame that RGFS selects is a key frame (``key-RGFS``). RGFS does not score B-frames warped from
  both anchors (``b_frames="both"``, the default): their future anchor is fresh where the past one has
  drifted. Under a latency budget a selected frame is warped instead while another key frame's CNN
  runs (one CNN at a time), or when it is a B-frame (it has vectors to warp with), and ``shed`` says
  ``rgfs``;
- under a budget, a B-frame that would be a key frame is skipped (no output): its CNN in line could
  hold the output up without bound, and in the background nothing could carry it forward (B-frames
  are no anchors);
- any other frame is warped, with the correction modules the run has (fusion, RGC); under a budget
  it is skipped instead when nothing is there to warp yet (the first key frame's CNN still runs) or
  when it is already late and a newer frame is waiting.

What happens next is decided where it depends on time: whether a key frame's CNN fits in the budget
(else ``hold``) and whether each module fits (else shed), by :mod:`taplab.runtime.latency`.
"""

from __future__ import annotations

from dataclasses import dataclass

from taplab.runtime.result import Kind, Module


@dataclass(frozen=True)
class FrameFacts:
    """What the decision needs to know of a frame and of the run at that moment.

    Attributes:
        pict_type: ``"I"``, ``"P"`` or ``"B"``.
        warpable: the frame has motion and the policy warps its picture type (B-frames only with
            ``b_frames`` ``"both"`` or ``"past"``, or under a budget), and FFW is on.
        features_expected: the run holds features to warp from, or a key frame's CNN is computing them.
        features_ready: the run holds the key frame's features (or a stand-in's) now.
        budget: a latency budget applies to this frame.
        cnn_busy: a key frame's CNN runs in the background.
        late: the frame is past its deadline and a newer frame is waiting.
        modules: the correction modules the run has (fusion where it has a correction network, RGC where on).
        since_key: frames since the last key frame that was an anchor (display order).
        anchor_gap: frames since the previous anchor (1 without B-frames; B-frames + 1 with them).
        bidirectional: a B-frame that will also be warped from its future anchor (``b_frames="both"``).
    """

    pict_type: str
    warpable: bool
    features_expected: bool
    features_ready: bool = True
    budget: bool = False
    cnn_busy: bool = False
    late: bool = False
    modules: frozenset[Module] = frozenset()
    since_key: int = 0
    bidirectional: bool = False
    anchor_gap: int = 1


@dataclass(frozen=True)
class Decision:
    """A frame's kind before time decides the rest, the modules to apply if it is warped, and what the
    budget took away already (``("rgfs",)``)."""

    kind: Kind
    modules: frozenset[Module] = frozenset()
    shed: tuple[str, ...] = ()


def rgfs_candidate(facts: FrameFacts, rgfs: bool, key_interval: int | None = None) -> bool:
    """Whether RGFS scores this frame: a frame that would otherwise be warped, with RGFS on; not one the key
    interval makes a key frame, nor a B-frame warped from both anchors (its future anchor's features are
    fresh where the past's have drifted). (The scores also feed rate mode's online threshold, so only
    candidates may be scored.)"""
    return rgfs and facts.pict_type != "I" and facts.warpable and facts.features_expected \
        and not facts.bidirectional and not _interval_due(facts, key_interval)


def _interval_due(facts: FrameFacts, key_interval: int | None) -> bool:
    """A P-frame is due when the frames up to the next anchor, the B-frames between included, would pass the bound:
    ``since_key + anchor_gap - 1 >= key_interval`` (the next anchor taken to be as far as this one is from the
    last). Without B-frames that is ``since_key >= key_interval``; with them, no B-frame is farther than
    ``key_interval`` frames from the key frame it is warped from."""
    return facts.pict_type == "P" and key_interval is not None \
        and facts.since_key + max(facts.anchor_gap, 1) - 1 >= key_interval


def decide(facts: FrameFacts, rgfs_selected: bool = False, key_interval: int | None = None) -> Decision:
    """The decision for a frame (see the module docstring); ``rgfs_selected``: RGFS picked this candidate;
    ``key_interval``: a P-frame this many frames or more after the last key frame is one (None: no bound)."""
    anchor = facts.pict_type != "B"
    if facts.pict_type == "I":
        kind = Kind.KEY_I
    elif not facts.warpable or not facts.features_expected:
        kind = Kind.KEY
    elif _interval_due(facts, key_interval):
        kind = Kind.KEY_INTERVAL
    else:
        kind = Kind.KEY_RGFS if rgfs_selected else Kind.WARP
    shed: tuple[str, ...] = ()
    if kind is Kind.KEY_INTERVAL and facts.budget and facts.cnn_busy:
        kind = Kind.WARP  # the bound waits for the running CNN; nothing of the budget's is shed
    if kind is Kind.KEY_RGFS and facts.budget and (facts.cnn_busy or not anchor):
        kind, shed = Kind.WARP, ("rgfs",)
    if kind.is_key:
        return Decision(Kind.SKIP if facts.budget and not anchor else kind, shed=shed)
    if not facts.features_ready or (facts.budget and facts.late):
        return Decision(Kind.SKIP, shed=shed)
    return Decision(Kind.WARP, facts.modules, shed)
