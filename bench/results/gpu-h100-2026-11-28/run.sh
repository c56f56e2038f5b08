# One lease's GPU run: laxc from .gpu/laxc.gz, bench/gpu.py with the given arguments, the kernel
# cache carried in (.gpu/kc.tgz.*) and sent back ($OUT/kc.tgz.*).
set -u
export PYTHONUNBUFFERED=1
mkdir -p /tmp/bin /tmp/kc
gunzip -c .gpu/laxc.gz > /tmp/bin/laxc && chmod +x /tmp/bin/laxc
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/env.txt 2>&1
if ls .gpu/kc.tgz.* >/dev/null 2>&1; then cat .gpu/kc.tgz.* | tar xzf - -C /tmp/kc; echo "kernel cache in: $(du -sh /tmp/kc)"; fi
python3 bench/gpu.py --laxc /tmp/bin/laxc --device cuda --kernel-cache /tmp/kc --out $OUT/gpu.json "$@" 2>&1 | tee $OUT/log.txt
du -sh /tmp/kc/* | tee -a $OUT/log.txt
tar czf - -C /tmp/kc . | split -b 15M - $OUT/kc.tgz.   # call 1 only: 230 MB, too much to bring back
ls -la $OUT
