# One lease's GPU run (session 41): laxc from .gpu/laxc.gz; bench/gpu.py on the 60M and 350M SVD
# and SVD+LaX specs, then bench/kernels.py --time on the two 350M specs (each kernel's GPU time),
# reusing the kernels gpu.py compiled.
set -u
export PYTHONUNBUFFERED=1
mkdir -p /tmp/bin /tmp/kc
gunzip -c .gpu/laxc.gz > /tmp/bin/laxc && chmod +x /tmp/bin/laxc
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv > $OUT/env.txt 2>&1
timeout 400 python3 bench/gpu.py --laxc /tmp/bin/laxc --device cuda --kernel-cache /tmp/kc \
    --out $OUT/gpu.json --no-train --only 60m-svd-r128.lax 60m-svd-r128-lax-identity.lax 350m-svd-r256 \
    --compile-timeout-s 225 --deadline-s 330 --timeout-s 70 2>&1 | tee $OUT/log.txt
for spec in llama-350m-svd-r256-lax-identity llama-350m-svd-r256; do
    timeout 80 python3 bench/kernels.py --laxc /tmp/bin/laxc --device cuda --kernel-cache /tmp/kc \
        --time --batch 8 --steps 1 --warmup 1 --json $OUT/kernels-$spec.json specs/paper/$spec.lax \
        2>&1 | tee -a $OUT/kernels.txt
done
du -sh /tmp/kc/* | tee -a $OUT/log.txt
# The second call, on the same machine still warm (the 350M SVD+LaX bench had been skipped at
# the first call's deadline; kernels.py had compiled its kernels into /tmp/kc by then):
#   timeout 190 python3 bench/gpu.py --laxc /tmp/bin/laxc --device cuda --kernel-cache /tmp/kc \
#       --out $OUT/gpu2.json --no-train --no-compile-first --only 350m-svd-r256-lax-identity --timeout-s 90
