const cv = (await import('@techstark/opencv-js')).default;
await new Promise(r=>{const i=setInterval(()=>{ if (cv.Mat) {clearInterval(i);r();} },5)});
console.log(typeof cv.HEAPU8, cv.HEAPU8?.byteLength, typeof cv.wasmMemory, Object.keys(cv).filter(k=>/HEAP|memory/i.test(k)).slice(0,20));
