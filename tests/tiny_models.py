"""Tiny random networks shared by the chapter tests."""

import torch


def tiny_diffusers_unet():
    """A tiny random diffusers ``UNet2DConditionModel`` (8×8, cross-attention width 16), frozen, eval mode."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return (
        UNet2DConditionModel(
            sample_size=8,
            in_channels=3,
            out_channels=3,
            layers_per_block=1,
            block_out_channels=(16, 32),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=16,
            attention_head_dim=4,
            norm_num_groups=8,
        )
        .eval()
        .requires_grad_(False)
    )


def tiny_diffusers_eps():
    """:func:`tiny_diffusers_unet` as our ε-model callable."""
    from bytecourse.diffusion.sampling import diffusers_eps_model

    return diffusers_eps_model(tiny_diffusers_unet())


def tiny_diffusers_unet3d():
    """A tiny random diffusers ``UNet3DConditionModel`` (8×8 frames, cross-attention width 16), frozen."""
    from diffusers import UNet3DConditionModel

    torch.manual_seed(0)
    return (
        UNet3DConditionModel(
            sample_size=8,
            in_channels=3,
            out_channels=3,
            layers_per_block=1,
            block_out_channels=(16, 32),
            down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
            up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
            cross_attention_dim=16,
            attention_head_dim=4,
            norm_num_groups=8,
        )
        .eval()
        .requires_grad_(False)
    )
