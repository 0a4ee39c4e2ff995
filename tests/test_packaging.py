import subprocess
import sys


def test_core_and_inference_import_without_torch():
    code = "import sys, brisc, brisc.data, brisc.imageio, brisc.metrics, brisc.maps, brisc.synth, brisc.inference; " \
           "bad = [m for m in ('torch', 'transformers', 'torchvision') if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)
