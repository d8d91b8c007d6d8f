"""PerPixelSegmentor: detectron2's SemanticSegmentor that also returns the anomaly score map."""
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList

__all__ = ["PerPixelSegmentor"]


@META_ARCH_REGISTRY.register()
class PerPixelSegmentor(SemanticSegmentor):
    """Same inputs and training outputs as SemanticSegmentor; inference returns, per image,
    {"sem_seg": (K, H, W) logits} and, when the head has a density, {"anomaly_score": (H, W)},
    both resized to the requested output size.
    """

    def forward(self, batched_inputs):
        if self.training:
            return super().forward(batched_inputs)
        images = [x["image"].to(self.device) for x in batched_inputs]
        images = [(x - self.pixel_mean) / self.pixel_std for x in images]
        images = ImageList.from_tensors(images, self.backbone.size_divisibility,
                                        padding_constraints=self.backbone.padding_constraints)
        results, _ = self.sem_seg_head(self.backbone(images.tensor))
        outputs = []
        for i, (input_per_image, image_size) in enumerate(zip(batched_inputs, images.image_sizes)):
            height = input_per_image.get("height", image_size[0])
            width = input_per_image.get("width", image_size[1])
            out = {"sem_seg": sem_seg_postprocess(results["sem_seg"][i], image_size, height, width)}
            if "anomaly_score" in results:
                score = results["anomaly_score"][i][None]
                out["anomaly_score"] = sem_seg_postprocess(score, image_size, height, width)[0]
            outputs.append(out)
        return outputs
