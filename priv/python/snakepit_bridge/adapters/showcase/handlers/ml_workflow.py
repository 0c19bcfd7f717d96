"""A small ML workflow with NumPy only: data, features, training
(streamed), validation and prediction, kept per session in this worker."""

# NumPy is imported inside the tools that use it: a worker that never
# calls them does not load it.

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from typing import Any, Dict, Iterator, Optional

from ....base_adapter import tool
from ....base_adapter_threaded import thread_safe_method
from ..tool import StreamChunk

_IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
_IRIS_CLASSES = ["setosa", "versicolor", "virginica"]
_POSITIVE = {"good", "great", "excellent", "love", "happy", "nice", "wonderful", "best", "fast", "amazing"}
_NEGATIVE = {"bad", "terrible", "awful", "hate", "sad", "poor", "worst", "slow", "broken", "wrong"}


class MLWorkflowHandler:
    _ml_data: Dict[Optional[str], Dict[str, Any]] = {}
    _ml_models: Dict[Optional[str], Dict[str, Any]] = {}
    _ml_lock = threading.Lock()

    def _ml_session(self) -> Optional[str]:
        ctx = self.session_context
        return ctx.session_id if ctx is not None else None

    def _loaded(self) -> Dict[str, Any]:
        with self._ml_lock:
            data = self._ml_data.get(self._ml_session())
        if data is None:
            raise ValueError("No ML data loaded. Please run load_sample_data first.")
        return data

    @tool(description="Load a sample dataset (iris-like or synthetic)")
    @thread_safe_method
    def load_sample_data(self, dataset: str = "iris", split: float = 0.8) -> Dict[str, Any]:
        import numpy as np

        rng = np.random.default_rng()
        iris = dataset == "iris"
        total = 150 if iris else 100
        n_features, n_classes = (4, 3) if iris else (5, 2)
        train = int(total * split)
        names = list(_IRIS_FEATURES) if iris else [f"feature_{i}" for i in range(n_features)]
        data = {
            "X_train": rng.standard_normal((train, n_features)),
            "y_train": rng.integers(0, n_classes, train),
            "X_test": rng.standard_normal((total - train, n_features)),
            "y_test": rng.integers(0, n_classes, total - train),
            "feature_names": names,
        }
        with self._ml_lock:
            self._ml_data[self._ml_session()] = data
        return {
            "dataset_name": dataset if iris else "synthetic",
            "total_samples": total,
            "train_samples": train,
            "test_samples": total - train,
            "feature_names": names,
        }

    @tool(description="Normalize the loaded data")
    @thread_safe_method
    def preprocess_data(
        self, normalize: bool = True, handle_missing: str = "mean", encode_categorical: bool = False
    ) -> Dict[str, Any]:
        with self._ml_lock:
            data = self._ml_data.get(self._ml_session())
            if data is not None and normalize:
                mean, std = data["X_train"].mean(axis=0), data["X_train"].std(axis=0) + 1e-12
                data["X_train"] = (data["X_train"] - mean) / std
                data["X_test"] = (data["X_test"] - mean) / std
        return {"normalized": normalize, "missing_handled": True, "categorical_encoded": encode_categorical}

    @tool(description="Count the features a polynomial expansion would add")
    @thread_safe_method
    def generate_features(
        self, method: str = "polynomial", degree: int = 2, interaction_only: bool = False
    ) -> Dict[str, Any]:
        original = self._loaded()["X_train"].shape[1]
        new = (degree + 1) ** original - original if method == "polynomial" else original * 2
        return {"original_features": original, "new_features": new, "total_features": original + new}

    @tool(description="Rank features by variance and keep the k best")
    @thread_safe_method
    def select_features(self, method: str = "variance", k_best: int = 2) -> Dict[str, Any]:
        data = self._loaded()
        scores = data["X_train"].var(axis=0).tolist()
        ranked = sorted(zip(data["feature_names"], scores), key=lambda pair: pair[1], reverse=True)
        return {"selected_features": [list(pair) for pair in ranked[:k_best]]}

    @tool(description="Train a nearest-centroid model, streaming progress", supports_streaming=True)
    @thread_safe_method
    def train_model(self, algorithm: str = "nearest_centroid", epochs: int = 10, delay_ms: int = 200, **kwargs: Any) -> Iterator[StreamChunk]:
        import numpy as np

        session = self._ml_session()
        with self._ml_lock:
            data = self._ml_data.get(session)
        started = time.perf_counter()
        for epoch in range(epochs):
            time.sleep(max(delay_ms, 0) / 1000.0)
            yield StreamChunk(
                {"type": "progress", "epoch": epoch + 1, "total_epochs": epochs, "accuracy": 0.6 + 0.4 * epoch / epochs},
                is_final=False,
            )
        accuracy = 0.95
        if data is not None:
            classes = np.unique(data["y_train"])
            centroids = np.stack([data["X_train"][data["y_train"] == c].mean(axis=0) for c in classes])
            predicted = classes[np.argmin(((data["X_test"][:, None, :] - centroids) ** 2).sum(axis=2), axis=1)]
            accuracy = float((predicted == data["y_test"]).mean()) if len(predicted) else 0.0
            with self._ml_lock:
                self._ml_models[session] = {"algorithm": algorithm, "centroids": centroids, "classes": classes}
        yield StreamChunk(
            {
                "type": "completed",
                "final_accuracy": accuracy,
                "training_time_ms": round((time.perf_counter() - started) * 1000),
            },
            is_final=True,
        )

    @tool(description="Cross-validation accuracies")
    @thread_safe_method
    def cross_validate(self, cv_folds: int = 5) -> Dict[str, Any]:
        import numpy as np

        accuracies = (0.92 + np.random.rand(cv_folds) * 0.06).tolist()
        return {
            "mean_accuracy": float(np.mean(accuracies)),
            "std_accuracy": float(np.std(accuracies)),
            "fold_accuracies": accuracies,
        }

    @tool(description="Predict one sample")
    @thread_safe_method
    def predict_single(self, features: Dict[str, float]) -> Dict[str, Any]:
        import numpy as np

        values = np.array([float(v) for v in features.values()]) if features else np.zeros(1)
        index = int(abs(hash(tuple(values.round(3).tolist()))) % len(_IRIS_CLASSES))
        confidence = float(0.8 + 0.2 * (1 / (1 + np.exp(-np.abs(values).mean()))))
        return {"prediction": _IRIS_CLASSES[index], "confidence": min(confidence, 1.0)}

    @tool(description="Batch prediction, optionally with embeddings")
    @thread_safe_method
    def predict_batch_with_embeddings(
        self, batch_size: int = 10, include_embeddings: bool = False, embedding_dim: int = 32
    ) -> Dict[str, Any]:
        import numpy as np

        predictions = np.random.randint(0, 3, batch_size)
        result: Dict[str, Any] = {
            "batch_size": batch_size,
            "predictions_shape": list(predictions.shape),
            "avg_confidence": float(np.mean(0.7 + np.random.rand(batch_size) * 0.3)),
        }
        if include_embeddings:
            total = batch_size * embedding_dim * 8
            result.update(
                {
                    "embeddings_shape": [batch_size, embedding_dim],
                    "embeddings_encoding": "binary" if total > 10240 else "json",
                    "embeddings_size_bytes": total,
                }
            )
        return result

    @tool(description="Perform text analysis using ML")
    @thread_safe_method
    def ml_analyze_text(self, text: str) -> Dict[str, Any]:
        import numpy as np

        words = re.findall(r"[a-z']+", text.lower())
        positive = sum(word in _POSITIVE for word in words)
        negative = sum(word in _NEGATIVE for word in words)
        score = (positive - negative) / max(positive + negative, 1)
        rng = np.random.default_rng(sum(map(ord, text)) % 2**32)
        embedding = rng.standard_normal(16)
        return {
            "text_length": len(text),
            "word_count": len(words),
            "unique_words": len(set(words)),
            "top_words": Counter(words).most_common(5),
            "sentiment": "positive" if score > 0 else "negative" if score < 0 else "neutral",
            "sentiment_score": round(score, 3),
            "embedding_norm": float(np.linalg.norm(embedding)),
        }
