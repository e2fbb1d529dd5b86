"""The two small timm ViTs of docs/results/vit_embedded (32×32 input, patch 8: a 4×4 grid + class token)."""

import timm


def vit_teacher(num_classes=10):
    """ViT, depth 4, width 64, 2 heads."""
    return timm.create_model(
        "vit_tiny_patch16_224",
        img_size=32,
        patch_size=8,
        depth=4,
        embed_dim=64,
        num_heads=2,
        num_classes=num_classes,
    )


def vit_student(num_classes=10):
    """ViT, depth 4, width 32, 2 heads."""
    return timm.create_model(
        "vit_tiny_patch16_224",
        img_size=32,
        patch_size=8,
        depth=4,
        embed_dim=32,
        num_heads=2,
        num_classes=num_classes,
    )
