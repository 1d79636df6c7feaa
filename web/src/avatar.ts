// The avatar on screen: a three.js scene (lighting, framing, orbit), the agent's GLB (or VRM), and
// the animation controller that turns markers and speech into clips and morph weights.
//
// The clip and morph names are the avatar service's contract: clips `idle`, `gesture_<gesture>`,
// `pose_<pose>`; morph targets `viseme_<Oculus name>`, `emotion_<emotion>`, `blinkLeft`,
// `blinkRight`. A model without some of them still loads: what it lacks is simply not played
// (`capabilities` says what is there).
import {
  ACESFilmicToneMapping,
  AnimationAction,
  AnimationClip,
  AnimationMixer,
  Box3,
  CanvasTexture,
  Color,
  DirectionalLight,
  Group,
  HemisphereLight,
  LoopOnce,
  LoopRepeat,
  Mesh,
  MeshBasicMaterial,
  Object3D,
  PerspectiveCamera,
  PlaneGeometry,
  PMREMGenerator,
  RingGeometry,
  Scene,
  SRGBColorSpace,
  Timer,
  Vector3,
  WebGLRenderer,
} from "three";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";
import { RoomEnvironment } from "three/examples/jsm/environments/RoomEnvironment.js";
import { GLTFLoader, type GLTF } from "three/examples/jsm/loaders/GLTFLoader.js";
import { VRMLoaderPlugin, type VRM } from "@pixiv/three-vrm";

export interface Capabilities {
  rigged: boolean;
  clips: string[];
  morphs: string[];
  vrm: boolean;
  blink: "clip" | "procedural" | "none";
}

type MorphMesh = Mesh & { morphTargetDictionary: Record<string, number>; morphTargetInfluences: number[] };

const FADE_S = 0.3;
const EMOTION_HOLD_S = 4;
const EMOTION_DECAY_S = 2.5;

/** Drives one loaded model: clips through an AnimationMixer, morph targets by name. */
export class AnimationController {
  readonly capabilities: Capabilities;
  private readonly mixer: AnimationMixer;
  private readonly actions = new Map<string, AnimationAction>();
  private readonly meshes: MorphMesh[];
  private base: AnimationAction | undefined;
  private gestureAction: AnimationAction | undefined;
  private clip = "";
  private readonly weights = new Map<string, number>();
  private visemeTargets = new Map<string, number>();
  private emotion = { name: "", target: 0, age: 0 };
  private blinkAt = 2;
  private readonly blinkNames: [string, string];
  private blinkT = -1;
  /** Gestures and poses asked for that the model has no clip for, newest last. */
  readonly missing: string[] = [];

  constructor(
    root: Object3D,
    clips: readonly AnimationClip[],
    private readonly still: boolean,
  ) {
    this.mixer = new AnimationMixer(root);
    for (const clip of clips) this.actions.set(clip.name, this.mixer.clipAction(clip));
    const meshes: MorphMesh[] = [];
    let rigged = false;
    root.traverse((o) => {
      if ((o as { isSkinnedMesh?: boolean }).isSkinnedMesh) rigged = true;
      const m = o as Partial<MorphMesh>;
      if (m.isMesh && m.morphTargetDictionary && m.morphTargetInfluences) meshes.push(m as MorphMesh);
    });
    this.meshes = meshes;
    const morphs = [...new Set(meshes.flatMap((m) => Object.keys(m.morphTargetDictionary)))];
    // VRM's preset names, or the snake_case the procedural generator writes.
    this.blinkNames = morphs.includes("blinkLeft") ? ["blinkLeft", "blinkRight"] : ["blink_left", "blink_right"];
    const blinkMorphs = this.blinkNames.every((n) => morphs.includes(n));
    const clipBlinks = clips.some((c) => c.tracks.some((t) => /blink/i.test(t.name)));
    this.capabilities = {
      rigged,
      clips: clips.map((c) => c.name).sort(),
      morphs: morphs.sort(),
      vrm: false,
      blink: clipBlinks ? "clip" : blinkMorphs ? "procedural" : "none",
    };
    this.mixer.addEventListener("finished", (ev) => {
      if (ev.action === this.gestureAction) this.backToBase();
    });
    this.idle();
  }

  /** The clip playing now ("" when the model has none). */
  get currentClip(): string {
    return this.clip;
  }

  idle(): void {
    const idle = this.actions.get("idle");
    if (!idle) return;
    idle.setLoop(LoopRepeat, Infinity).play();
    if (this.still) idle.paused = true;
    this.base = idle;
    this.clip = "idle";
  }

  /** Plays `gesture_<name>` once, cross-fading from and back to the idle or held pose. */
  gesture(name: string): boolean {
    const action = this.actions.get(`gesture_${name}`);
    if (!action) {
      this.missing.push(`gesture_${name}`);
      return false;
    }
    const from = this.gestureAction ?? this.base;
    action.reset().setLoop(LoopOnce, 1);
    action.clampWhenFinished = true;
    action.play();
    if (from && from !== action) from.crossFadeTo(action, FADE_S, false);
    this.gestureAction = action;
    this.clip = `gesture_${name}`;
    return true;
  }

  /** Holds `pose_<name>` until the next pose; "standing" or a pose without a clip goes to idle. */
  pose(name: string): boolean {
    const action = this.actions.get(`pose_${name}`) ?? (name === "standing" ? this.actions.get("idle") : undefined);
    if (!action) {
      this.missing.push(`pose_${name}`);
      return false;
    }
    if (action === this.base) return true;
    action.reset().setLoop(action === this.actions.get("idle") ? LoopRepeat : LoopOnce, Infinity);
    action.clampWhenFinished = true;
    action.play();
    if (!this.gestureAction && this.base) this.base.crossFadeTo(action, FADE_S, false);
    this.base = action;
    if (!this.gestureAction) this.clip = action.getClip().name;
    return true;
  }

  /** Blends to emotion_<name> at `intensity` (0 = 1), then decays back to neutral. */
  setEmotion(name: string, intensity: number): void {
    this.emotion = { name: name === "neutral" ? "" : `emotion_${name}`, target: intensity || 1, age: 0 };
  }

  /** Mouth shapes now: Oculus viseme name → weight. */
  setVisemes(weights: ReadonlyMap<string, number>): void {
    this.visemeTargets = new Map([...weights].map(([k, w]) => [`viseme_${k}`, w]));
  }

  update(dt: number): void {
    this.mixer.update(dt);
    const targets = new Map<string, number>(this.visemeTargets);
    const e = this.emotion;
    if (e.name) {
      e.age += dt;
      const decay = Math.max(0, Math.min(1, (e.age - EMOTION_HOLD_S) / EMOTION_DECAY_S));
      const w = e.target * (1 - decay);
      if (w > 0) targets.set(e.name, w);
      else e.name = "";
    }
    if (this.capabilities.blink === "procedural" && !this.still) {
      const b = this.blink(dt);
      targets.set(this.blinkNames[0], b);
      targets.set(this.blinkNames[1], b);
    }
    for (const name of new Set([...this.weights.keys(), ...targets.keys()])) {
      const target = targets.get(name) ?? 0;
      const cur = this.weights.get(name) ?? 0;
      // Mouth and lids follow fast, expressions ease in and out.
      const tau = name.startsWith("emotion_") ? 0.25 : 0.04;
      const next = cur + (target - cur) * Math.min(1, dt / tau);
      if (next < 0.001 && target === 0) this.weights.delete(name);
      else this.weights.set(name, next);
      this.apply(name, next < 0.001 && target === 0 ? 0 : next);
    }
  }

  /** Active morph weights (above 0.01), rounded, for the debug state. */
  activeMorphs(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [k, w] of this.weights) if (w > 0.01) out[k] = Math.round(w * 1000) / 1000;
    return out;
  }

  private apply(name: string, w: number): void {
    for (const m of this.meshes) {
      const i = m.morphTargetDictionary[name];
      if (i !== undefined) m.morphTargetInfluences[i] = w;
    }
  }

  private blink(dt: number): number {
    if (this.blinkT < 0) {
      this.blinkAt -= dt;
      if (this.blinkAt > 0) return 0;
      this.blinkT = 0;
    }
    this.blinkT += dt;
    const d = 0.16;
    if (this.blinkT >= d) {
      this.blinkT = -1;
      this.blinkAt = 2 + Math.random() * 4;
      return 0;
    }
    return Math.sin((Math.PI * this.blinkT) / d);
  }

  private backToBase(): void {
    const g = this.gestureAction;
    this.gestureAction = undefined;
    if (this.base && g) {
      this.base.enabled = true;
      this.base.setEffectiveWeight(1);
      this.base.play();
      g.crossFadeTo(this.base, FADE_S, false);
      this.clip = this.base.getClip().name;
    } else {
      g?.fadeOut(FADE_S);
      this.clip = "";
    }
  }
}

/** The three.js view: renderer, camera, lights, the loaded avatar, AR placement. */
export class AvatarView {
  readonly renderer: WebGLRenderer;
  readonly scene = new Scene();
  readonly camera = new PerspectiveCamera(28, 1, 0.05, 100);
  readonly controls: OrbitControls;
  readonly stage = new Group();
  controller: AnimationController | undefined;
  vrm: VRM | undefined;
  private readonly timer = new Timer();
  private readonly reticle: Mesh;
  private frameHooks: ((dt: number) => void)[] = [];
  /** Frames rendered so far. */
  frames = 0;

  constructor(
    private readonly canvas: HTMLCanvasElement,
    private readonly still: boolean,
  ) {
    this.renderer = new WebGLRenderer({ canvas, antialias: true, alpha: true, preserveDrawingBuffer: true });
    this.renderer.setPixelRatio(Math.min(2, window.devicePixelRatio));
    this.renderer.outputColorSpace = SRGBColorSpace;
    this.renderer.toneMapping = ACESFilmicToneMapping;
    this.renderer.toneMappingExposure = 1.05;
    this.renderer.xr.enabled = true;
    const pmrem = new PMREMGenerator(this.renderer);
    this.scene.environment = pmrem.fromScene(new RoomEnvironment(), 0.04).texture;
    this.scene.environmentIntensity = 0.5;
    pmrem.dispose();
    this.scene.add(new HemisphereLight(new Color("#dfe8ff"), new Color("#3a3040"), 0.8));
    const key = new DirectionalLight(new Color("#fff4e6"), 1.7);
    key.position.set(1.5, 2.5, 2.5);
    const rim = new DirectionalLight(new Color("#9bb8ff"), 1.4);
    rim.position.set(-2, 2, -2.5);
    const fill = new DirectionalLight(new Color("#ffffff"), 0.5);
    fill.position.set(-2, 1, 2);
    this.scene.add(key, rim, fill, this.stage);
    this.stage.add(contactShadow());
    this.reticle = new Mesh(
      new RingGeometry(0.12, 0.15, 40).rotateX(-Math.PI / 2),
      new MeshBasicMaterial({ color: 0x7fd3ff }),
    );
    this.reticle.matrixAutoUpdate = false;
    this.reticle.visible = false;
    this.scene.add(this.reticle);
    this.camera.position.set(0, 1.5, 3);
    this.controls = new OrbitControls(this.camera, canvas);
    this.controls.enableDamping = true;
    this.controls.enablePan = false;
    this.controls.minPolarAngle = Math.PI * 0.25;
    this.controls.maxPolarAngle = Math.PI * 0.6;
    this.resize();
    new ResizeObserver(() => this.resize()).observe(canvas.parentElement ?? canvas);
    this.renderer.setAnimationLoop((_t, frame) => this.frame(frame));
  }

  onFrame(hook: (dt: number) => void): void {
    this.frameHooks.push(hook);
  }

  /** Parses a GLB (VRM 1.0 when it has the extension), shows it, and frames the camera on it. */
  async load(glb: Uint8Array): Promise<AnimationController> {
    const loader = new GLTFLoader();
    loader.register((parser) => new VRMLoaderPlugin(parser));
    const buffer = glb.buffer.slice(glb.byteOffset, glb.byteOffset + glb.byteLength) as ArrayBuffer;
    const gltf: GLTF = await loader.parseAsync(buffer, "");
    for (const child of [...this.stage.children]) if (child.name === "avatar") this.stage.remove(child);
    const vrm = gltf.userData.vrm as VRM | undefined;
    const root = vrm?.scene ?? gltf.scene;
    root.name = "avatar";
    root.traverse((o) => {
      o.frustumCulled = false;
    });
    this.stage.add(root);
    this.vrm = vrm;
    // The clips animate the model's own bones; the VRM normalized rig must not overwrite them.
    if (vrm?.humanoid) vrm.humanoid.autoUpdateHumanBones = false;
    this.controller = new AnimationController(root, gltf.animations, this.still);
    this.controller.capabilities.vrm = vrm !== undefined;
    this.frame(undefined);
    this.frameOn(root);
    return this.controller;
  }

  /** A medium shot: the upper body fills the view, the face a little above the middle. */
  frameOn(root: Object3D): void {
    const box = new Box3().setFromObject(root);
    const size = box.getSize(new Vector3());
    const top = box.max.y + Math.max(0.1, size.y * 0.1); // room for a raised hand
    const bottom = Math.max(box.min.y, top - Math.max(0.5, size.y * 0.5));
    const span = top - bottom;
    const target = new Vector3((box.min.x + box.max.x) / 2, bottom + span * 0.58, (box.min.z + box.max.z) / 2);
    const vfov = (this.camera.fov * Math.PI) / 180;
    const fitH = (span * 1.15) / 2 / Math.tan(vfov / 2);
    const hfov = 2 * Math.atan(Math.tan(vfov / 2) * this.camera.aspect);
    const fitW = (Math.max(size.x, size.z) * 1.3) / 2 / Math.tan(hfov / 2);
    const dist = Math.max(fitH, fitW) + size.z / 2;
    this.camera.position.set(target.x + dist * 0.12, target.y + span * 0.06, target.z + dist);
    this.controls.target.copy(target);
    this.controls.minDistance = dist * 0.5;
    this.controls.maxDistance = dist * 2.5;
    this.controls.update();
  }

  /** Shows the reticle where hit-test found a surface (AR), or hides it. */
  setReticle(matrix: Float32Array | undefined): void {
    this.reticle.visible = matrix !== undefined;
    if (matrix) this.reticle.matrix.fromArray(matrix);
  }

  /** Moves the avatar onto the reticle's surface, facing the viewer. */
  placeOnReticle(viewer: Vector3): void {
    const pos = new Vector3().setFromMatrixPosition(this.reticle.matrix);
    this.stage.position.copy(pos);
    this.stage.lookAt(viewer.x, pos.y, viewer.z);
  }

  /** Where the face is on the canvas, in drawing-buffer pixels (for tests that watch the mouth). */
  faceRect(): { x: number; y: number; w: number; h: number } | undefined {
    const avatar = this.stage.getObjectByName("avatar");
    if (!avatar) return undefined;
    let head = this.vrm?.humanoid?.getRawBoneNode("head") ?? undefined;
    avatar.traverse((o) => {
      if (!head && /^head$/i.test(o.name)) head = o;
    });
    const size = new Box3().setFromObject(avatar).getSize(new Vector3());
    const center = head
      ? new Vector3().setFromMatrixPosition(head.matrixWorld).add(new Vector3(0, size.y * 0.02, 0))
      : new Box3().setFromObject(avatar).max.clone().add(new Vector3(0, -size.y * 0.08, 0));
    const r = size.y * 0.07;
    const corners = [new Vector3(-r, -r, 0), new Vector3(r, r, 0)].map((d) => center.clone().add(d).project(this.camera));
    const w = this.renderer.domElement.width;
    const h = this.renderer.domElement.height;
    const [a, b] = corners.map((c) => ({ x: ((c.x + 1) / 2) * w, y: ((1 - c.y) / 2) * h }));
    return { x: Math.round(a.x), y: Math.round(b.y), w: Math.round(b.x - a.x), h: Math.round(a.y - b.y) };
  }

  stageCanPlace(): boolean {
    return this.reticle.visible;
  }

  resetStage(): void {
    this.stage.position.set(0, 0, 0);
    this.stage.rotation.set(0, 0, 0);
    this.reticle.visible = false;
  }

  private resize(): void {
    if (this.renderer.xr.isPresenting) return;
    const parent = this.canvas.parentElement ?? this.canvas;
    const w = Math.max(1, parent.clientWidth);
    const h = Math.max(1, parent.clientHeight);
    this.renderer.setSize(w, h, false);
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
    const avatar = this.stage.getObjectByName("avatar");
    if (avatar) this.frameOn(avatar);
  }

  private xrFrame: ((frame: XRFrame) => void) | undefined;

  setXrFrame(hook: ((frame: XRFrame) => void) | undefined): void {
    this.xrFrame = hook;
  }

  private frame(frame: XRFrame | undefined): void {
    this.timer.update();
    const dt = Math.min(0.1, this.timer.getDelta());
    for (const hook of this.frameHooks) hook(dt);
    // VRM first (expressions, spring bones), so the controller's morph weights are the last word.
    this.vrm?.update(dt);
    this.controller?.update(dt);
    if (frame && this.xrFrame) this.xrFrame(frame);
    if (!this.renderer.xr.isPresenting) this.controls.update();
    this.renderer.render(this.scene, this.camera);
    this.frames++;
  }
}

/** A soft dark ellipse under the feet, so the avatar stands on something. */
function contactShadow(): Mesh {
  const c = document.createElement("canvas");
  c.width = c.height = 128;
  const g = c.getContext("2d") as CanvasRenderingContext2D;
  const grad = g.createRadialGradient(64, 64, 0, 64, 64, 64);
  grad.addColorStop(0, "rgba(0,0,0,0.45)");
  grad.addColorStop(1, "rgba(0,0,0,0)");
  g.fillStyle = grad;
  g.fillRect(0, 0, 128, 128);
  const mesh = new Mesh(
    new PlaneGeometry(1, 1).rotateX(-Math.PI / 2),
    new MeshBasicMaterial({ map: new CanvasTexture(c), transparent: true, depthWrite: false }),
  );
  mesh.scale.set(0.9, 1, 0.6);
  mesh.position.y = 0.002;
  return mesh;
}
