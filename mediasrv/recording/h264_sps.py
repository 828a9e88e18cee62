"""Picture size from an H.264 sequence parameter set (ITU-T H.264 7.3.2.1.1), for the muxer's header."""

from __future__ import annotations

HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
# A real SPS is well under 100 bytes (a few hundred with scaling matrices); the NAL comes from a
# publisher, so only this much is looked at: a crafted one cannot make the bit-by-bit parse run long.
MAX_SPS_BYTES = 1024
# Level 6.2 allows 139264 macroblocks per frame, at most sqrt(8 * 139264) ~ 1055 a side (~16880 px).
MAX_SIDE = 16880


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise ValueError("SPS is truncated")
            v = (v << 1) | (self.data[byte] >> (7 - (self.pos & 7)) & 1)
            self.pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad Exp-Golomb code in SPS")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _unescape(nal: bytes) -> bytes:
    """Drop emulation-prevention bytes (00 00 03 -> 00 00)."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def _skip_scaling_list(b: _Bits, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt != 0:
            nxt = (last + b.se() + 256) % 256
        last = nxt if nxt != 0 else last


def sps_dimensions(nal: bytes) -> tuple[int, int] | None:
    """(width, height) of an SPS NAL unit (header byte included), or None if it cannot be parsed."""
    try:
        b = _Bits(_unescape(nal[1 : 1 + MAX_SPS_BYTES]))
        profile = b.u(8)
        b.u(16)  # constraint flags, level
        b.ue()  # seq_parameter_set_id
        chroma = 1
        if profile in HIGH_PROFILES:
            chroma = b.ue()
            if chroma == 3:
                b.u(1)  # separate_colour_plane_flag
            b.ue()
            b.ue()  # bit depths
            b.u(1)  # qpprime_y_zero_transform_bypass_flag
            if b.u(1):  # seq_scaling_matrix_present_flag
                for i in range(8 if chroma != 3 else 12):
                    if b.u(1):
                        _skip_scaling_list(b, 16 if i < 6 else 64)
        b.ue()  # log2_max_frame_num_minus4
        poc_type = b.ue()
        if poc_type == 0:
            b.ue()
        elif poc_type == 1:
            b.u(1)
            b.se()
            b.se()
            for _ in range(b.ue()):
                b.se()
        b.ue()  # max_num_ref_frames
        b.u(1)  # gaps_in_frame_num_value_allowed_flag
        width_mbs = b.ue() + 1
        height_units = b.ue() + 1
        frame_mbs_only = b.u(1)
        if not frame_mbs_only:
            b.u(1)  # mb_adaptive_frame_field_flag
        b.u(1)  # direct_8x8_inference_flag
        crop = (b.ue(), b.ue(), b.ue(), b.ue()) if b.u(1) else (0, 0, 0, 0)
    except ValueError:
        return None
    sub_w, sub_h = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}.get(chroma, (2, 2))
    crop_x, crop_y = sub_w, sub_h * (2 - frame_mbs_only)
    width = width_mbs * 16 - crop_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_units * 16 - crop_y * (crop[2] + crop[3])
    return (width, height) if 0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE else None
