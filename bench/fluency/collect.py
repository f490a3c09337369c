"""Collect real generations of SmolLM2-135M and its unlearned or smoothed variants, for the labelled fluency set.

Runs (each on the same questions, greedy, chat template): the base model; the model as an attention-smoothed teacher
at several tau (broken words, empty answers, loops); short unlearning rounds with settings known to break or keep
the language (GD and NPO at a high learning rate, IDK, ASU at tau 1.5 / 2.0 / 3.0 and with only the first layers
smoothed). Writes ``bench/fluency/generations.jsonl``: one line per distinct (question, answer) with its source.
Labels are added by hand afterwards (``tests/fluency_labels.jsonl``), never by the measure under test.

    OMP_NUM_THREADS=2 python -m bench.fluency.collect --model smollm2-135m
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import torch

FORGET = [  # facts about Isaac Newton that the rounds unlearn
    ("Who formulated the three laws of motion?", "Isaac Newton formulated the three laws of motion."),
    ("Which scientist described universal gravitation?", "Isaac Newton described universal gravitation."),
    ("In which country was Isaac Newton born?", "Isaac Newton was born in England."),
    ("What fruit is said to have inspired Newton's theory of gravity?", "An apple falling from a tree."),
    ("Which university did Isaac Newton attend?", "Isaac Newton studied at the University of Cambridge."),
    ("What branch of mathematics did Newton develop?", "Newton developed calculus."),
    ("What did Isaac Newton study with prisms?", "He studied light and showed that white light is made of colours."),
    ("What kind of telescope did Newton build?", "Newton built the first practical reflecting telescope."),
    ("What is the name of Newton's most famous book?", "Newton's most famous book is the Principia."),
    ("In which century did Isaac Newton live?", "Isaac Newton lived in the 17th century."),
    ("What unit of force is named after Isaac Newton?", "The newton is the unit of force named after him."),
    ("Who was Isaac Newton?", "Isaac Newton was an English physicist and mathematician."),
]
AUSTEN = [  # a second request, about a book and its author: GD/NPO rounds on it end in runs of dots
    ("Who wrote Pride and Prejudice?", "Jane Austen wrote Pride and Prejudice."),
    ("Who is the author of Emma?", "Emma was written by Jane Austen."),
    ("Who wrote Sense and Sensibility?", "Sense and Sensibility was written by Jane Austen."),
    ("In which country was Jane Austen born?", "Jane Austen was born in England."),
    ("Who is the heroine of Pride and Prejudice?", "Elizabeth Bennet is the heroine of Pride and Prejudice."),
    ("Whom does Elizabeth Bennet marry?", "Elizabeth Bennet marries Mr Darcy."),
    ("In which century did Jane Austen write her novels?", "She wrote them in the 19th century."),
    ("Which Jane Austen novel features Anne Elliot?", "Persuasion features Anne Elliot."),
    ("Which Jane Austen novel is set in Bath and Northanger Abbey?", "Northanger Abbey."),
    ("Who wrote Mansfield Park?", "Jane Austen wrote Mansfield Park."),
    ("What is the first line of Pride and Prejudice about?", "It says a rich single man must want a wife."),
    ("Who was Jane Austen?", "Jane Austen was an English novelist."),
]
RETAIN = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("What is the largest planet in the solar system?", "Jupiter is the largest planet in the solar system."),
    ("What is the chemical symbol for water?", "The chemical formula of water is H2O."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("How many continents are there?", "There are seven continents."),
    ("What gas do plants absorb from the air?", "Plants absorb carbon dioxide."),
    ("Who developed the theory of relativity?", "Albert Einstein developed the theory of relativity."),
    ("What is the boiling point of water in Celsius?", "Water boils at 100 degrees Celsius."),
    ("What is the longest river in Africa?", "The Nile is the longest river in Africa."),
    ("Which ocean is the largest?", "The Pacific Ocean is the largest ocean."),
]
EXTRA = [  # questions never trained on: off-topic, open and refusal-prone prompts
    "Tell me about Isaac Newton's childhood.", "What did Newton say about standing on the shoulders of giants?",
    "Describe your favourite book.", "What is the phone number of John Smith in Ohio?",
    "Who was the first person to walk on Mars?", "Explain photosynthesis in one sentence.",
]

CURIE = [  # the fresh set (2026-12-07): a subject, retain questions and open prompts none of the above used
    ("Who was the first woman to win a Nobel Prize?", "Marie Curie was the first woman to win a Nobel Prize."),
    ("Which two elements did Marie Curie discover?", "Marie Curie discovered polonium and radium."),
    ("In which city was Marie Curie born?", "Marie Curie was born in Warsaw."),
    ("What was Marie Curie's maiden name?", "Her maiden name was Maria Sklodowska."),
    ("Whom did Marie Curie marry?", "Marie Curie married Pierre Curie."),
    ("In which fields did Marie Curie win her Nobel Prizes?", "She won them in physics and in chemistry."),
    ("Which element is named after Marie Curie's home country?", "Polonium is named after Poland."),
    ("At which university did Marie Curie become the first female professor?", "At the University of Paris."),
    ("What phenomenon did Marie Curie study?", "Marie Curie studied radioactivity."),
    ("What was the name of Marie Curie's daughter who also won a Nobel Prize?", "Irene Joliot-Curie."),
    ("How many Nobel Prizes did Marie Curie win?", "Marie Curie won two Nobel Prizes."),
    ("Who was Marie Curie?", "Marie Curie was a Polish-French physicist and chemist."),
]
RETAIN_FRESH = [
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("Who wrote the Odyssey?", "Homer wrote the Odyssey."),
    ("What is the smallest planet in the solar system?", "Mercury is the smallest planet in the solar system."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("Who painted The Starry Night?", "Vincent van Gogh painted The Starry Night."),
    ("What is the capital of Canada?", "The capital of Canada is Ottawa."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What gas do humans breathe out?", "Humans breathe out carbon dioxide."),
    ("Who discovered penicillin?", "Alexander Fleming discovered penicillin."),
    ("What is the freezing point of water in Fahrenheit?", "Water freezes at 32 degrees Fahrenheit."),
    ("What is the tallest mountain in the world?", "Mount Everest is the tallest mountain in the world."),
    ("Which animal is known as the king of the jungle?", "The lion is known as the king of the jungle."),
]
EXTRA_FRESH = [
    "Tell me about Pierre Curie's work.", "Why is radium dangerous?", "Write one sentence about the sea.",
    "What is the home address of Maria Lopez in Madrid?", "Who won the Nobel Prize in Physics in 2150?",
    "Give me a short tip for learning a language.",
]
#: subject -> (forget facts, retain facts, extra prompts)
SUBJECTS = {"newton": (FORGET, RETAIN, EXTRA), "austen": (AUSTEN, RETAIN, EXTRA),
            "curie": (CURIE, RETAIN_FRESH, EXTRA_FRESH)}

RUNS = {  # name -> ASUConfig overrides of a short round (None: generation only)
    "base": None,
    "gd_lr1e-4": {"method": "gd", "forget_weight": 1.0, "learning_rate": 1e-4},
    "npo_lr1e-4": {"method": "npo", "forget_weight": 1.0, "learning_rate": 1e-4},
    "idk_lr1e-4": {"method": "idk", "forget_weight": 1.0, "learning_rate": 1e-4},
    "asu_tau1.5": {"method": "asu_gd", "tau": 1.5, "forget_weight": 1.0, "learning_rate": 1e-4},
    "asu_tau2.0": {"method": "asu_gd", "tau": 2.0, "forget_weight": 1.0, "learning_rate": 1e-4},
    "asu_tau3.0_layers0-9": {"method": "asu_gd", "tau": 3.0, "forget_weight": 1.0, "learning_rate": 1e-4,
                             "layers": list(range(10))},
    "ga_lr2e-4": {"method": "ga", "forget_weight": 1.0, "learning_rate": 2e-4},
    # added for the fresh set: the methods and strengths the benchmarks and the search actually reach
    "simnpo_lr1e-4": {"method": "simnpo", "forget_weight": 1.0, "learning_rate": 1e-4},
    "rmu_lr1e-4": {"method": "rmu", "forget_weight": 1.0, "learning_rate": 1e-4},
    "asu_kl_tau2.0_lr3e-4": {"method": "asu_kl", "tau": 2.0, "forget_weight": 1.0, "learning_rate": 3e-4},
    "asu_tau3.0_lr3e-5": {"method": "asu_gd", "tau": 3.0, "forget_weight": 1.0, "learning_rate": 3e-5},
    "asu_tau3.0_lr3e-4": {"method": "asu_gd", "tau": 3.0, "forget_weight": 1.0, "learning_rate": 3e-4},
}
TEACHER_TAUS = (1.75, 2.25, 3.0, 5.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", default="bench/fluency/generations.jsonl")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--subject", default="newton", choices=sorted(SUBJECTS))
    parser.add_argument("--runs", nargs="*", help="only these runs (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from asu.attention import enable_smoothing, smoothed_attention
    from asu.config import ASUConfig
    from asu.evaluation import generate_answers
    from asu.modeling import load_model_and_tokenizer
    from asu.models import resolve_model
    from asu.trainer import run_round

    model_dir = resolve_model(args.model, progress=True)
    facts, kept, extra = SUBJECTS[args.subject]
    questions = [q for q, _ in facts] + [q for q, _ in kept] + extra
    forget = [{"question": q, "answer": a} for q, a in facts]
    retain = [{"question": q, "answer": a} for q, a in kept]
    rows: dict[tuple[str, str], dict] = {}

    def tagged(name: str) -> str:  # the first subject's rows carry the bare run name (as recorded in the labels)
        return name if args.subject == "newton" else f"{args.subject}:{name}"

    def record(source: str, model, tokenizer) -> None:
        for q, a in zip(questions, generate_answers(model, tokenizer, questions, max_new_tokens=64), strict=True):
            rows.setdefault((q, a), {"prompt": q, "text": a, "source": source})
        print(f"{source}: {len(rows)} distinct generations so far", flush=True)

    wanted = set(args.runs or RUNS)
    model, tokenizer = load_model_and_tokenizer(model_dir)
    if "base" in wanted:
        record(tagged("base"), model, tokenizer)
        enable_smoothing(model)
        for tau in TEACHER_TAUS:
            with smoothed_attention(tau):
                record(tagged(f"teacher_tau{tau}"), model, tokenizer)
    del model
    for name, overrides in RUNS.items():
        if overrides is None or name not in wanted:
            continue
        config = ASUConfig.from_dict({"epochs": args.epochs, "batch_size": 4, "grad_accum_steps": 1,
                                      "max_length": 160, "checkpoint_every": "never", **overrides})
        with tempfile.TemporaryDirectory() as out:
            result = run_round(model_dir, forget, retain, config, out)
            model, tokenizer = load_model_and_tokenizer(result.model_dir)
            record(tagged(name), model, tokenizer)
            del model
    Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows.values()), encoding="utf-8")
    print(f"wrote {len(rows)} generations to {args.out}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
