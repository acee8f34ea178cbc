"""Train and evaluate a model with the recbole_diffcl plugin, RecBole-style.

    python run_recbole_diffcl.py                                   # DiffCLRec on ml-100k (bundled)
    python run_recbole_diffcl.py --model=SASRec --dataset=amazon-sports
    python run_recbole_diffcl.py -m CL4SRec -d amazon-beauty --config_files="a.yaml b.yaml" --epochs=20

Any other ``--key=value`` overrides a property (as RecBole's command line does); it wins over every
property file. ``--result_file=PATH`` writes the run's summary as JSON.
"""
import sys

from recbole_diffcl.cli import main

if __name__ == "__main__":
    sys.exit(main())
