"""Training of the embedded default model, apart from serving.

`world` renders the procedural clips the model learns from and measures generated frames;
`train` trains the whole model (``python -m segment_pipeline.training.train``) and
`train_decoder` fine-tunes its frame decoder alone
(``python -m segment_pipeline.training.train_decoder``). Nothing that serves imports this
package: serving reads prompts with `segment_pipeline.embedded_vocabulary` only.
"""
