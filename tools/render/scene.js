// Loads a generated avatar the way a three.js client does (GLTFLoader + three-vrm's
// VRMLoaderPlugin), reports what it found (VRM meta, humanoid bones, expressions, clips,
// morph targets), renders fixed frames and measures them. render.mjs calls
// window.arconvRender(url) and gets one JSON-able report back.
import * as THREE from 'three';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
import { VRMLoaderPlugin } from '@pixiv/three-vrm';

// The VRM 1.0 humanoid bones a gesture-driving client needs (the required set and more).
const BONES = [
  'hips', 'spine', 'chest', 'neck', 'head',
  'leftShoulder', 'leftUpperArm', 'leftLowerArm', 'leftHand',
  'rightShoulder', 'rightUpperArm', 'rightLowerArm', 'rightHand',
  'leftUpperLeg', 'leftLowerLeg', 'leftFoot', 'rightUpperLeg', 'rightLowerLeg', 'rightFoot',
  'leftThumbProximal', 'leftIndexProximal', 'rightThumbProximal', 'rightIndexProximal',
];
const ARM = (side) => [`${side}UpperArm`, `${side}LowerArm`, `${side}Hand`,
  `${side}IndexProximal`, `${side}IndexIntermediate`, `${side}IndexDistal`];
// Morph target names used when the file has no VRM expressions (the older unrigged model).
const MORPH_FOR = { aa: 'viseme_aa', happy: 'emotion_happy', blink: 'blink' };
const VIEWS = { full: [360, 600], face: [360, 360] };

const renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
renderer.setPixelRatio(1);
renderer.outputColorSpace = THREE.SRGBColorSpace;
document.body.appendChild(renderer.domElement);
const gl = renderer.getContext();

function stage() {
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(0xdfe5ec);
  scene.add(new THREE.HemisphereLight(0xffffff, 0x667788, 1.4));
  const key = new THREE.DirectionalLight(0xffffff, 2.2);
  key.position.set(1.2, 2.5, 3);
  scene.add(key);
  const fill = new THREE.DirectionalLight(0xdde8ff, 0.7);
  fill.position.set(-2, 1.5, 2);
  scene.add(fill);
  const floor = new THREE.Mesh(
    new THREE.CircleGeometry(0.7, 48),
    new THREE.MeshStandardMaterial({ color: 0xb8c0c8, roughness: 1 }),
  );
  floor.rotation.x = -Math.PI / 2;
  floor.position.y = -0.001;
  scene.add(floor);
  return scene;
}

function camera(view, center, visibleHeight) {
  const [w, h] = VIEWS[view];
  const cam = new THREE.PerspectiveCamera(28, w / h, 0.01, 50);
  const dist = visibleHeight / 2 / Math.tan(THREE.MathUtils.degToRad(14));
  cam.position.set(center.x, center.y, center.z + dist);  // the avatar faces +Z
  cam.lookAt(center);
  cam.updateMatrixWorld(true);
  return cam;
}

function project(cam, view, points) {
  const [w, h] = VIEWS[view];
  return points.map((p) => {
    const v = p.clone().project(cam);
    return [((v.x + 1) / 2) * w, ((1 - v.y) / 2) * h];
  });
}

function rect(points, pad, view) {
  if (!points.length) return null;
  const [w, h] = VIEWS[view];
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  const r = {
    x0: Math.max(0, Math.floor(Math.min(...xs) - pad)),
    y0: Math.max(0, Math.floor(Math.min(...ys) - pad)),
    x1: Math.min(w, Math.ceil(Math.max(...xs) + pad)),
    y1: Math.min(h, Math.ceil(Math.max(...ys) + pad)),
  };
  return r.x1 > r.x0 && r.y1 > r.y0 ? r : null;
}

// Pixels of the last render, top row first, RGBA.
function pixels(view) {
  const [w, h] = VIEWS[view];
  const raw = new Uint8Array(w * h * 4);
  gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, raw);
  const out = new Uint8Array(w * h * 4);
  for (let y = 0; y < h; y++) out.set(raw.subarray((h - 1 - y) * w * 4, (h - y) * w * 4), y * w * 4);
  return { w, h, data: out };
}

function changed(a, b, r, threshold = 24) {
  if (!r) return null;
  let n = 0;
  let hit = 0;
  for (let y = r.y0; y < r.y1; y++) {
    for (let x = r.x0; x < r.x1; x++) {
      const i = (y * a.w + x) * 4;
      const d = (Math.abs(a.data[i] - b.data[i]) + Math.abs(a.data[i + 1] - b.data[i + 1])
        + Math.abs(a.data[i + 2] - b.data[i + 2])) / 3;
      n++;
      if (d > threshold) hit++;
    }
  }
  return n ? hit / n : null;
}

// Mean luma in the rectangle, and the share of its pixels darker than `dark` (an open mouth).
function luma(a, r, dark = 64) {
  if (!r) return null;
  let sum = 0;
  let n = 0;
  let darkCount = 0;
  for (let y = r.y0; y < r.y1; y++) {
    for (let x = r.x0; x < r.x1; x++) {
      const i = (y * a.w + x) * 4;
      const l = 0.2126 * a.data[i] + 0.7152 * a.data[i + 1] + 0.0722 * a.data[i + 2];
      sum += l;
      n++;
      if (l < dark) darkCount++;
    }
  }
  return n ? { mean: sum / n, dark: darkCount / n } : null;
}

window.arconvRender = async (url) => {
  const loader = new GLTFLoader();
  loader.register((parser) => new VRMLoaderPlugin(parser));
  const gltf = await loader.loadAsync(url);
  const vrm = gltf.userData.vrm ?? null;
  const root = vrm ? vrm.scene : gltf.scene;
  // Clips animate the raw bones, as exported; three-vrm must not copy its normalized rig over them.
  if (vrm) vrm.humanoid.autoUpdateHumanBones = false;
  const scene = stage();
  scene.add(root);
  root.updateMatrixWorld(true);

  const rest = [];
  root.traverse((o) => rest.push([o, o.position.clone(), o.quaternion.clone(), o.scale.clone()]));
  const morphMeshes = [];
  let skinned = false;
  let triangles = 0;
  root.traverse((o) => {
    if (o.isSkinnedMesh) skinned = true;
    if (o.isMesh) {
      const g = o.geometry;
      triangles += (g.index ? g.index.count : g.attributes.position.count) / 3;
      if (o.morphTargetDictionary && Object.keys(o.morphTargetDictionary).length) morphMeshes.push(o);
    }
  });
  const morphs = [...new Set(morphMeshes.flatMap((m) => Object.keys(m.morphTargetDictionary)))];
  const bone = (name) => (vrm ? vrm.humanoid.getRawBoneNode(name) : null);
  const mixer = new THREE.AnimationMixer(root);
  const clips = gltf.animations;

  function setFace(name) {
    for (const m of morphMeshes) m.morphTargetInfluences.fill(0);
    if (vrm && vrm.expressionManager) {
      vrm.expressionManager.resetValues();
      if (name) vrm.expressionManager.setValue(name, 1);
      vrm.expressionManager.update();
    } else if (name) {
      for (const m of morphMeshes) {
        const i = m.morphTargetDictionary[MORPH_FOR[name] ?? name];
        if (i !== undefined) m.morphTargetInfluences[i] = 1;
      }
    }
  }

  function setPose(clipName, t) {
    mixer.stopAllAction();
    for (const [o, p, q, s] of rest) {
      o.position.copy(p);
      o.quaternion.copy(q);
      o.scale.copy(s);
    }
    if (clipName) {
      const clip = clips.find((c) => c.name === clipName);
      const action = mixer.clipAction(clip);
      action.reset().play();
      mixer.setTime(t);
    }
    root.updateMatrixWorld(true);
  }

  // World positions of the vertices a morph target moves, with and without it: those moved
  // more than 1 mm, or (share > 0) at least that share of the largest move.
  function movedBy(morphName, share = 0) {
    const out = [];
    for (const m of morphMeshes) {
      const idx = m.morphTargetDictionary[morphName];
      if (idx === undefined) continue;
      const delta = m.geometry.morphAttributes.position[idx];
      const relative = m.geometry.morphTargetsRelative;
      const base = m.geometry.attributes.position;
      const v = new THREE.Vector3();
      const moved = new Float32Array(delta.count);
      for (let i = 0; i < delta.count; i++) {
        let dx = delta.getX(i), dy = delta.getY(i), dz = delta.getZ(i);
        if (!relative) { dx -= base.getX(i); dy -= base.getY(i); dz -= base.getZ(i); }
        moved[i] = Math.hypot(dx, dy, dz);
      }
      const min = Math.max(1e-3, share * moved.reduce((a, b) => Math.max(a, b), 0));
      for (let i = 0; i < delta.count; i++) {
        if (moved[i] < min) continue;
        m.morphTargetInfluences.fill(0);
        m.getVertexPosition(i, v);
        out.push(m.localToWorld(v.clone()));
        m.morphTargetInfluences[idx] = 1;
        m.getVertexPosition(i, v);
        out.push(m.localToWorld(v.clone()));
      }
      m.morphTargetInfluences.fill(0);
    }
    return out;
  }

  const report = {
    vrm: Boolean(vrm),
    meta: vrm ? { metaVersion: vrm.meta?.metaVersion ?? null, name: vrm.meta?.name ?? null,
      licenseUrl: vrm.meta?.licenseUrl ?? null } : null,
    bones: vrm ? BONES.filter((b) => bone(b)) : [],
    missingBones: vrm ? BONES.filter((b) => !bone(b)) : BONES,
    expressions: vrm?.expressionManager ? vrm.expressionManager.expressions.map((e) => e.expressionName) : [],
    applied: {},
    clips: clips.map((c) => ({ name: c.name, duration: c.duration, tracks: c.tracks.length })),
    morphs,
    skinned,
    triangles,
    frames: {},
    regions: {},
    metrics: {},
  };

  // At rest: the first frame of idle when the model has one (the pose every gesture starts
  // from and returns to; a VRM's bind pose is the T-pose), else the bind pose.
  const restPose = () => setPose(clips.some((c) => c.name === 'idle') ? 'idle' : null, 0);

  // Expressions applied: setValue moves morph target influences.
  restPose();
  for (const name of ['aa', 'happy', 'blink']) {
    setFace(name);
    report.applied[name] = morphMeshes.flatMap((m) => Object.entries(m.morphTargetDictionary)
      .filter(([, i]) => m.morphTargetInfluences[i] > 0.5).map(([n]) => n));
  }
  setFace(null);

  // Cameras: the whole body (room above the head for a raised hand), and the face.
  const box = new THREE.Box3().setFromObject(root);
  const size = box.getSize(new THREE.Vector3());
  const center = box.getCenter(new THREE.Vector3());
  report.bbox = { min: box.min.toArray(), max: box.max.toArray() };
  const full = camera('full', new THREE.Vector3(center.x, center.y + size.y * 0.06, center.z),
    size.y * 1.25);
  const faceNames = morphs.filter((n) => /^(viseme_|emotion_|blink)/.test(n));
  const facePoints = faceNames.flatMap((n) => movedBy(n));
  const faceBox = new THREE.Box3().setFromPoints(facePoints.length ? facePoints : [box.max]);
  const faceCenter = faceBox.getCenter(new THREE.Vector3());
  const faceSize = faceBox.getSize(new THREE.Vector3());
  const face = camera('face', faceCenter, Math.max(faceSize.x, faceSize.y, 0.12) * 2.2);

  function shot(name, view, cam) {
    const [w, h] = VIEWS[view];
    renderer.setSize(w, h, false);
    renderer.render(scene, cam);
    report.frames[name] = renderer.domElement.toDataURL('image/png');
    return pixels(view);
  }
  const armPoints = (side) => ARM(side).map(bone).filter(Boolean)
    .map((b) => b.getWorldPosition(new THREE.Vector3()));

  // Rest, full body.
  restPose();
  setFace(null);
  const restFull = shot('rest', 'full', full);
  const restArms = { right: armPoints('right'), left: armPoints('left') };

  // gesture_wave where the right hand is highest.
  const wave = clips.find((c) => c.name === 'gesture_wave');
  if (wave) {
    let best = { t: wave.duration / 2, y: -Infinity };
    const hand = bone('rightHand');
    for (let k = 0; k <= 24 && hand; k++) {
      const t = (wave.duration * k) / 24;
      setPose('gesture_wave', t);
      const y = hand.getWorldPosition(new THREE.Vector3()).y;
      if (y > best.y) best = { t, y };
    }
    setPose('gesture_wave', best.t);
    const shoulder = bone('rightUpperArm') ?? bone('rightShoulder');
    report.wave = { time: best.t, duration: wave.duration, handY: hand ? best.y : null,
      shoulderY: shoulder ? shoulder.getWorldPosition(new THREE.Vector3()).y : null };
    const waveFull = shot('gesture_wave', 'full', full);
    for (const side of ['right', 'left']) {
      const pts = [...restArms[side], ...armPoints(side)];
      report.regions[`${side}Arm`] = rect(project(full, 'full', pts), 14, 'full');
    }
    report.metrics.wave = {
      rightArm: changed(restFull, waveFull, report.regions.rightArm),
      leftArm: changed(restFull, waveFull, report.regions.leftArm),
      whole: changed(restFull, waveFull, { x0: 0, y0: 0, x1: VIEWS.full[0], y1: VIEWS.full[1] }),
    };
    restPose();
  }

  // The face: rest, viseme aa, happy, blink.
  const restFace = shot('face_rest', 'face', face);
  const whole = { x0: 0, y0: 0, x1: VIEWS.face[0], y1: VIEWS.face[1] };
  const mouthMorph = vrm ? report.applied.aa[0] : MORPH_FOR.aa;
  // The mouth: where the open-mouth viseme moves vertices most (lips and jaw, not the cheeks).
  report.regions.mouth = mouthMorph
    ? rect(project(face, 'face', movedBy(mouthMorph, 0.5)), 2, 'face') : null;
  // The eyes: where the blink expression's morph targets move vertices most (the lids).
  const lids = [...new Set(report.applied.blink)].flatMap((n) => movedBy(n, 0.5));
  report.regions.eyes = lids.length ? rect(project(face, 'face', lids), 2, 'face') : null;
  for (const name of ['aa', 'happy', 'blink']) {
    setFace(name);
    const px = shot(`face_${name}`, 'face', face);
    report.metrics[name] = { face: changed(restFace, px, whole) };
    if (name === 'blink') report.metrics.blink.eyes = changed(restFace, px, report.regions.eyes);
    if (name === 'aa') {
      Object.assign(report.metrics.aa, {
        mouth: changed(restFace, px, report.regions.mouth),
        mouthLumaRest: luma(restFace, report.regions.mouth),
        mouthLuma: luma(px, report.regions.mouth),
      });
    }
  }
  setFace(null);
  return report;
};
window.arconvReady = true;
