"""Interoperability with other NAS codes: the authors' PyTorch DARTS-PT (ruocwang/darts-pt).

What lives here: a reader of PyTorch checkpoints that needs no PyTorch (`torch_file`), the
name map between the reference's supernets and tfnas's (`darts_pt`), and `tfnas import`
(`importer`). It may import everything below the command line (`search` included); only
`cli` imports it.
"""
