"""The registered student as an MLflow pyfunc model, logged from code: the model is this file.

MLflow copies this file into the logged model and runs it at load time; the weights are not copied.
`model_config["model_dir"]` is the student's `model/` directory in the stage store, loaded with
transformers when the model is loaded (`mlflow.pyfunc.load_model("models:/NAME/VERSION")`).
`predict` takes problems, renders them as the pipeline does (the prompt template in one user turn,
through the tokenizer's chat template) and returns greedy completions. Imports only MLflow and
transformers, so it loads outside this project too.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel


class StoreStudent(PythonModel):
    def load_context(self, context) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        config = context.model_config
        self.tokenizer = AutoTokenizer.from_pretrained(config["model_dir"])
        self.model = AutoModelForCausalLM.from_pretrained(config["model_dir"])
        self.model.eval()
        self.template = config.get("prompt_template", "{problem}")
        self.chat_kwargs = config.get("chat_template_kwargs", {})
        self.max_new_tokens = int(config.get("max_new_tokens", 256))

    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        import torch

        completions = []
        for problem in model_input:
            messages = [{"role": "user", "content": self.template.replace("{problem}", problem)}]
            prompt = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, **self.chat_kwargs
            )
            ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
            with torch.no_grad():
                out = self.model.generate(
                    **ids,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                )
            new_tokens = out[0, ids["input_ids"].shape[1] :]
            completions.append(self.tokenizer.decode(new_tokens, skip_special_tokens=True))
        return completions


mlflow.models.set_model(StoreStudent())
